"""Console sessions: a random token in an HttpOnly cookie, the session itself in PostgreSQL.

A session is new at every login (the token a visitor had before is dropped, so a planted
cookie never becomes a logged-in one), ends after ``session_idle_seconds`` unused or
``session_absolute_seconds`` in all, and carries its own CSRF secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

from aiohttp import web

from callrouter.console.state import CONSOLE, Console
from callrouter.store import console_sessions
from callrouter.store.console_sessions import SessionRow

COOKIE = "callrouter_session"
VISITOR_COOKIE = "callrouter_csrf"
"""Before login there is no session: the forms of public pages (login, invitation) are
protected by a random cookie the form must repeat (double submit)."""
PENDING_SECONDS = 300.0
"""How long a password-checked session may wait for its second factor."""

SESSION = web.RequestKey("console_session", SessionRow)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def now_of(console: Console) -> datetime:
    return datetime.fromtimestamp(console.clock(), UTC)


def secure_cookies(request: web.Request, console: Console) -> bool:
    """Secure when this request came over TLS, or the console is published over https (a TLS
    proxy in front)."""
    return request.secure or console.config.public_url.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    console = request.app[CONSOLE]
    response.set_cookie(
        name,
        value,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure_cookies(request, console),
    )


async def current(request: web.Request) -> SessionRow | None:
    """The request's live session (marked seen now), or None."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    console = request.app[CONSOLE]
    now = now_of(console)
    idle_since = now - timedelta(seconds=console.config.session_idle_seconds)
    return await console_sessions.touch(console.database, _hash(token), now, idle_since)


async def start(
    request: web.Request, response: web.StreamResponse, user_id: UUID, *, pending: bool
) -> None:
    """Log ``user_id`` in on ``response`` with a new session, ending the one the request had.

    :param pending: the password was right but the second factor is still to come.
    """
    console = request.app[CONSOLE]
    await end(request)
    token = secrets.token_urlsafe(32)
    now = now_of(console)
    seconds = PENDING_SECONDS if pending else console.config.session_absolute_seconds
    await console_sessions.create(
        console.database,
        _hash(token),
        user_id,
        pending=pending,
        now=now,
        expires_at=now + timedelta(seconds=seconds),
        csrf_secret=secrets.token_bytes(32),
        address=request.remote,
    )
    set_cookie(request, response, COOKIE, token)


async def end(request: web.Request) -> None:
    """End the request's session (if any) in the database."""
    token = request.cookies.get(COOKIE)
    if token and len(token) <= 100:
        await console_sessions.delete(request.app[CONSOLE].database, _hash(token))


def forget(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def csrf_token(session: SessionRow) -> str:
    return base64.urlsafe_b64encode(session.csrf_secret).decode().rstrip("=")


def new_visitor_token() -> str:
    return secrets.token_urlsafe(32)


SWEEP_SECONDS = 600.0


async def sweep(console: Console) -> None:
    """Delete expired sessions now and then (an expired one already opens nothing)."""
    while True:
        now = now_of(console)
        idle_since = now - timedelta(seconds=console.config.session_idle_seconds)
        await console_sessions.delete_expired(console.database, now, idle_since)
        await asyncio.sleep(SWEEP_SECONDS)
