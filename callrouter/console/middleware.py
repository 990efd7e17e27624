"""The console's middleware: who is logged in, CSRF on every form, security headers, and
HTML error pages. It leaves every route that is not the console's (the API) alone."""

from __future__ import annotations

import hmac
import logging
from urllib.parse import quote

from aiohttp import web

from callrouter.console import sessions
from callrouter.console.pages import CSRF, CSRF_FIELD, CSRF_HEADER, render, see_other
from callrouter.console.permissions import (
    USER,
    ConsoleHandler,
    ConsoleUser,
    Forbidden,
    permissions_of,
)
from callrouter.console.scope import CHOSEN, CLIENT_COOKIE
from callrouter.console.state import CONSOLE
from callrouter.store import console_users
from callrouter.store.availability import OUTAGE_ERRORS

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""No inline script or style anywhere, nothing from another origin, never in a frame."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC_ROUTE = "console.static"
SECOND_FACTOR_ROUTES = frozenset({"console.login_code", "console.logout"})
"""What a session waiting for its second factor may reach."""


def _route_name(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.name if resource is not None else None


@web.middleware
async def console_middleware(request: web.Request, handler: ConsoleHandler) -> web.StreamResponse:
    name = _route_name(request)
    if name is None or not name.startswith("console."):
        return await handler(request)
    if name == STATIC_ROUTE:
        response = await handler(request)
        response.headers["Cache-Control"] = "public, max-age=3600"
        _secure(response)
        return response
    try:
        response = await _page(request, handler, name)
    except Forbidden as exc:
        response = await render(request, "error.html", _error(403, exc), status=403)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = await render(request, "error.html", _error(exc.status, exc), status=exc.status)
    except OUTAGE_ERRORS as exc:
        log.warning("console: database unavailable: %s", type(exc).__name__)
        response = await render(
            request,
            "error.html",
            _error(503, "the database is unavailable; try again shortly"),
            status=503,
        )
        response.headers["Retry-After"] = "5"
    except Exception:
        # A page's own failure: logged, and answered as a page, not the API's problem+json.
        log.exception("console: unhandled error on %s %s", request.method, request.path)
        response = await render(
            request,
            "error.html",
            _error(500, "something went wrong; it has been logged"),
            status=500,
        )
    _secure(response)
    return response


def _error(status: int, reason: object) -> dict[str, object]:
    titles = {
        403: "Not allowed",
        404: "Not found",
        429: "Too many attempts",
        500: "Error",
        503: "Unavailable",
    }
    text = str(getattr(reason, "reason", reason))
    return {"status": status, "title": titles.get(status, "Error"), "reason": text}


async def _page(request: web.Request, handler: ConsoleHandler, name: str) -> web.StreamResponse:
    console = request.app[CONSOLE]
    session = await sessions.current(request)
    visitor_token = None
    if session is not None and session.pending:
        request[sessions.SESSION] = session
        if name not in SECOND_FACTOR_ROUTES and name not in console.public_routes:
            return see_other("/login/code")
        request[CSRF] = sessions.csrf_token(session)
    elif session is not None:
        request[sessions.SESSION] = session
        row = session.user
        user = ConsoleUser(
            row.id,
            row.client_id,
            row.role,
            row.email,
            row.name,
            permissions_of(row.role),
            two_factor=row.totp_secret is not None,
        )
        request[USER] = user
        request[CSRF] = sessions.csrf_token(session)
        if (
            not user.two_factor
            and name not in console.enrolment_routes
            and await console_users.requires_2fa(console.database, user.client_id)
        ):
            return see_other("/account/two-factor")
    else:
        if name not in console.public_routes:
            if request.method in SAFE_METHODS:
                return see_other("/login?next=" + quote(request.path_qs, safe="/"))
            raise web.HTTPForbidden(reason="log in first")
        visitor_token = request.cookies.get(sessions.VISITOR_COOKIE)
        if not visitor_token or len(visitor_token) > 100:
            # A new visitor: the cookie goes out with this page's forms.
            visitor_token = sessions.new_visitor_token()
        request[CSRF] = visitor_token
    if request.method not in SAFE_METHODS:
        await _check_csrf(request)
    response = await handler(request)
    if CHOSEN in request:
        sessions.set_cookie(request, response, CLIENT_COOKIE, str(request[CHOSEN]))
    if visitor_token is not None and request.cookies.get(sessions.VISITOR_COOKIE) != visitor_token:
        sessions.set_cookie(request, response, sessions.VISITOR_COOKIE, visitor_token)
    return response


async def _check_csrf(request: web.Request) -> None:
    """The token of this session (or visitor cookie) must come back with every change."""
    expected = request.get(CSRF, "")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        value = (await request.post()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise web.HTTPForbidden(
            reason="this form has expired or did not come from this site: reload the page and "
            "send it again"
        )


def _secure(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
