"""What the console's handlers read from the Application (set once by ``site.install``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from callrouter.config import ConsoleConfig
from callrouter.console.mail import Mailer
from callrouter.console.passwords import Passwords
from callrouter.ratelimit import TokenBuckets


@dataclass(eq=False)
class Console:
    """The console's services: the database, its settings, password hashing, login limits."""

    database: asyncpg.Pool[asyncpg.Record]
    config: ConsoleConfig
    passwords: Passwords
    login_rate: TokenBuckets
    """Login attempts per client address (unknown emails count the same as known ones)."""
    mailer: Mailer | None = None
    """Sends invitation links; None when no ``[console] smtp_host`` is set."""
    public_routes: frozenset[str] = frozenset()
    """Route names a visitor may open without logging in."""
    enrolment_routes: frozenset[str] = frozenset()
    """Route names open to a user who must still enrol in a mandatory second factor."""
    clock: Callable[[], float] = field(default=time.time)


CONSOLE = web.AppKey("console", Console)
