"""Whether PostgreSQL answers: watched, so calls and the API know without waiting on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # A pooled connection whose server died in the middle of a statement is left in a state
    # asyncpg refuses to use ("another operation is in progress"); the pool replaces it.
    asyncpg.exceptions.InternalClientError,
    # A database closed to new connections for maintenance (ALLOW_CONNECTIONS false: "database
    # is not currently accepting connections") refuses a new pooled connection with this.
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
)
"""What a database that is away (killed, restarting, unreachable) raises, as opposed to a
database that refuses a statement."""


class DatabaseAvailability:
    """The database's state as last seen: by the watcher's probe, the call journal's writes,
    the number lookups and the embedded server's supervisor.

    :param interval: seconds between probes.
    :param timeout: seconds a probe may take before the database counts as away.
    """

    def __init__(self, *, interval: float = 1.0, timeout: float = 2.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self.up = True

    def report(self, up: bool, reason: str = "") -> None:
        """What a user of the database just saw; a change is logged once."""
        if up == self.up:
            return
        self.up = up
        if up:
            log.warning("database: reachable again")
        else:
            log.error("database: unavailable (%s); calls route from memory", reason)

    async def check(self, probe: Callable[[], Awaitable[object]]) -> bool:
        """Probe now (``probe`` runs one cheap query); True when the database answered."""
        try:
            await asyncio.wait_for(probe(), self.timeout)
        except OUTAGE_ERRORS as exc:
            self.report(False, type(exc).__name__)
            return False
        self.report(True)
        return True

    async def watch(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Probe every ``interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check(probe)
