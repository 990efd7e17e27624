"""LISTEN on one dedicated connection that comes back after the database does.

Trunk, pool, key-revocation, suppression and recording-disposal changes reach the router as
NOTIFYs. A LISTEN connection dies with its server; without a new one every later change would
go unheard until the next restart (a revoked API key would keep working). So the channels are
remembered and listened to again on a new connection once the database answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg

from callrouter.store.availability import OUTAGE_ERRORS

log = logging.getLogger(__name__)

NotifyCallback = Callable[[Any, int, str, Any], None]
"""asyncpg's listener callback: (connection, server pid, channel, payload)."""


class Listens(Protocol):
    """Where a service registers its LISTEN callbacks (this class, or a plain connection)."""

    async def add_listener(self, channel: str, callback: NotifyCallback, /) -> None: ...


class Notifications:
    """:param dsn: where to listen.
    :param backoff: seconds before the n-th consecutive reconnection attempt (n from 1).
    """

    def __init__(
        self, dsn: str, *, backoff: Callable[[int], float] = lambda n: min(5.0, 0.25 * 2**n)
    ) -> None:
        self._dsn = dsn
        self._backoff = backoff
        self._channels: list[tuple[str, NotifyCallback]] = []
        self._connection: asyncpg.Connection[asyncpg.Record] | None = None
        self._lost = asyncio.Event()
        self._on_lost: list[Callable[[], None]] = []
        self._on_listening: list[Callable[[], Awaitable[None]]] = []

    async def connect(self) -> None:
        connection: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(self._dsn)
        try:
            for channel, callback in self._channels:
                await connection.add_listener(channel, callback)
        except BaseException:
            connection.terminate()  # lost again half-way: the next attempt starts afresh
            raise
        connection.add_termination_listener(lambda _connection: self._lose())
        self._connection = connection

    def _lose(self) -> None:
        for callback in self._on_lost:
            callback()
        self._lost.set()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` as soon as the connection is lost (NOTIFYs may go unheard)."""
        self._on_lost.append(callback)

    def on_listening(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback`` each time the connection listens again, to read back what
        changed while nobody listened."""
        self._on_listening.append(callback)

    async def add_listener(self, channel: str, callback: NotifyCallback, /) -> None:
        self._channels.append((channel, callback))
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.add_listener(channel, callback)

    async def run(self, say: Callable[[str], None]) -> None:
        """Listen again whenever the connection is lost, until cancelled."""
        while True:
            await self._lost.wait()
            self._lost.clear()
            failures = 0
            while True:
                failures += 1
                await asyncio.sleep(self._backoff(failures))
                try:
                    await self.connect()
                except OUTAGE_ERRORS:
                    continue
                try:
                    for callback in self._on_listening:
                        await callback()
                except OUTAGE_ERRORS:
                    await self.close()  # gone again before the read back: start over
                    continue
                break
            say(f"database: listening again on {len(self._channels)} channel(s)")

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
