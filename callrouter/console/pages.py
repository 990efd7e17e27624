"""How console pages are declared and rendered: a path, its GET and POST handlers, whether a
visitor may open it without logging in, and the navigation every page shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp_jinja2
from aiohttp import web

from callrouter.console.permissions import USER, ConsoleHandler, Permission

CSRF = web.RequestKey("console_csrf", str)
"""The token this request's forms must send back (field ``csrf_token`` or ``X-CSRF-Token``)."""
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Page:
    """One console path with its handlers."""

    path: str
    name: str
    """The route name after ``console.`` (url_for in templates: ``console.<name>``)."""
    get: ConsoleHandler | None = None
    post: ConsoleHandler | None = None
    public: bool = False
    """Open to visitors (login, invitation); every other page needs a logged-in user."""
    before_second_factor: bool = False
    """Open to a user who still has to enrol in 2FA that the client makes mandatory."""

    @property
    def route_name(self) -> str:
        return f"console.{self.name}"


@dataclass(frozen=True)
class NavItem:
    """A link of the navigation, shown to users with its permission (None: everyone)."""

    label: str
    path: str
    permission: Permission | None = None


NAV: tuple[NavItem, ...] = (
    NavItem("Overview", "/", Permission.REPORTS_READ),
    NavItem("Calls", "/calls", Permission.CALLS_READ),
    NavItem("Numbers and pools", "/numbers", Permission.NUMBERS_READ),
    NavItem("Webhooks", "/webhooks", Permission.WEBHOOKS_WRITE),
    NavItem("API keys", "/keys", Permission.KEYS_WRITE),
    NavItem("Privacy", "/privacy", Permission.PRIVACY_MANAGE),
    NavItem("Users", "/users", Permission.USERS_MANAGE),
    NavItem("My account", "/account"),
)


CLIENTS_NAV = NavItem("Clients", "/clients")
"""Shown to operator users only (users of no client)."""


def base_context(request: web.Request) -> dict[str, Any]:
    """What base.html needs on every page."""
    user = request.get(USER)
    nav = [] if user is None else [i for i in NAV if i.permission is None or user.may(i.permission)]
    if user is not None and user.client_id is None:
        nav = [CLIENTS_NAV, *nav]  # an operator chooses the client first
    return {"user": user, "csrf_token": request.get(CSRF, ""), "nav": nav, "path": request.path}


async def render(
    request: web.Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """The page ``template`` with base.html's context (user, CSRF token, navigation)."""
    return aiohttp_jinja2.render_template(
        template, request, {**base_context(request), **(context or {})}, status=status
    )


def see_other(location: str) -> web.Response:
    """After a POST: go to ``location`` with a GET (303), so a reload does not post again."""
    return web.Response(status=303, headers={"Location": location})


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after login: a path on this site only (no ``//host`` or scheme), so the
    login form cannot be used to send people elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def path_id(request: web.Request, name: str, what: str) -> UUID:
    """The id a page's path names; a path that is not an id is a page that does not exist."""
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound(reason=f"no such {what}") from None
