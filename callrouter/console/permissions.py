"""Roles and what each may do, the logged-in user a request acts as, and the guard handlers use.

The roles and their rights are those of issue 15: an owner runs the account (users, numbers,
pools, webhooks, keys, privacy) and sees everything; a manager works with numbers, pools,
reports, calls and recordings; an analyst reads reports and calls with caller numbers masked
and no audio; a listener reads calls and hears recordings. Operator users (no client) may do
everything for every client.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from aiohttp import web


class Permission(StrEnum):
    """One right a page or action needs."""

    CALLS_READ = "calls.read"
    CALLS_CALLER_NUMBER = "calls.caller_number"
    """See (and search by) callers' numbers unmasked, in pages and exports."""
    RECORDINGS_LISTEN = "recordings.listen"
    REPORTS_READ = "reports.read"
    NUMBERS_READ = "numbers.read"
    NUMBERS_WRITE = "numbers.write"
    POOLS_WRITE = "pools.write"
    WEBHOOKS_WRITE = "webhooks.write"
    KEYS_WRITE = "keys.write"
    PRIVACY_MANAGE = "privacy.manage"
    USERS_MANAGE = "users.manage"


P = Permission
ROLES: dict[str, frozenset[Permission]] = {
    "owner": frozenset(Permission),
    "manager": frozenset(
        {
            P.CALLS_READ,
            P.CALLS_CALLER_NUMBER,
            P.RECORDINGS_LISTEN,
            P.REPORTS_READ,
            P.NUMBERS_READ,
            P.NUMBERS_WRITE,
            P.POOLS_WRITE,
        }
    ),
    "analyst": frozenset({P.CALLS_READ, P.REPORTS_READ, P.NUMBERS_READ}),
    "listener": frozenset({P.CALLS_READ, P.CALLS_CALLER_NUMBER, P.RECORDINGS_LISTEN}),
    "operator": frozenset(Permission),
}
"""Role -> what it may do. ``operator`` is only for users without a client."""

CLIENT_ROLES = ("owner", "manager", "analyst", "listener")
"""The roles a user of a client may have, most rights first."""


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """Who a console request acts as (set on the request by the console's middleware)."""

    user_id: UUID
    client_id: UUID | None
    """None for an operator user (every client)."""
    role: str
    email: str
    name: str
    permissions: frozenset[Permission]
    two_factor: bool = False
    """Whether the user logs in with a TOTP code."""

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"user:{self.user_id}"


def permissions_of(role: str) -> frozenset[Permission]:
    return ROLES.get(role, frozenset())


USER = web.RequestKey("console_user", ConsoleUser)
"""The logged-in user; absent on public pages (login, invitation) for visitors."""

ConsoleHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Forbidden(Exception):
    """The user may not do this; the middleware answers with the 403 page."""

    def __init__(self, permission: Permission) -> None:
        super().__init__(f"needs {permission}")
        self.permission = permission


def current_user(request: web.Request) -> ConsoleUser:
    """The logged-in user of a page that is not public (the middleware made sure of one)."""
    return request[USER]


def require(permission: Permission) -> Callable[[ConsoleHandler], ConsoleHandler]:
    """Decorate a console handler: it runs only for a user with ``permission`` (else 403).

    Logging in is the middleware's job: a visitor never reaches a handler that is not public.
    """

    def decorate(handler: ConsoleHandler) -> ConsoleHandler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not current_user(request).may(permission):
                raise Forbidden(permission)
            return await handler(request)

        return guarded

    return decorate


MASK = "•"


def mask_caller_number(e164: str | None) -> str:
    """A caller's number as a role without ``calls.caller_number`` sees it: the country code
    and the last two digits stay (enough to tell abroad from local, or two callers apart in a
    list), the rest is masked. ``+441515550123`` -> ``+44••••••••23``."""
    if not e164:
        return ""
    digits = e164.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        return MASK * len(e164)  # not a number (a SIP user name): nothing of it shows
    if len(digits) <= 4:
        return "+" + MASK * len(digits)
    keep = 1 if digits[0] in "17" else 2  # NANP and +7 have one-digit country codes
    return "+" + digits[:keep] + MASK * (len(digits) - keep - 2) + digits[-2:]
