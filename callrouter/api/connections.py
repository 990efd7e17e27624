"""HTTP connections under a budget: per-source and total limits, header and idle deadlines.

aiohttp waits for a request's headers for as long as the peer likes and accepts every
connection the listen queue hands it, so a few hundred slow clients (slowloris) or a flood of
idle sockets could hold every descriptor of the process. Each connection is wrapped here before
aiohttp's protocol sees it: over a limit it is closed at accept without a byte, and a single
deadline closes it when it stays idle or sends its headers too slowly. The wrapper learns where
a request stands from the API's front door: a request reaches it once its headers are in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from callrouter.api.forwarded import TrustedProxies
from callrouter.api.parse_errors import ProblemSite

__all__ = ["ConnectionGuard", "GuardedSite", "HttpLimits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The ``[http]`` settings of the same names."""

    max_connections: int = 4096
    max_connections_per_source: int = 256
    idle_timeout: float = 60.0
    """Seconds a connection may wait, silent, for its next request."""
    header_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its headers."""
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    """Reverse proxies: their connections carry many clients, so the per-source limit does not
    apply to them (the total does)."""


class _GuardedProtocol(asyncio.Protocol):
    """Stands in front of one aiohttp request handler, forwarding everything to it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.state = "idle"
        """idle (between requests), headers (a request has started) or busy (being served)."""
        self._loop = asyncio.get_running_loop()
        self._until = 0.0
        """Loop time at which an idle connection, or one still sending headers, is closed."""
        self._seconds = 0.0
        self._waiting_for = ""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        if not self.guard.admit(self.source):
            transport.abort()
            return
        self.transport = transport
        self.guard.open[transport] = self
        self.inner.connection_made(transport)
        self._arm(self.guard.limits.idle_timeout, "a request")

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self.state == "idle":
            # Armed when a request starts, not per byte: trickling headers keeps no one alive.
            self.state = "headers"
            self._arm(self.guard.limits.header_timeout, "the request headers")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.transport is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self._disarm()
        self.guard.close(self.transport, self.source)
        self.transport = None
        self.inner.connection_lost(exc)

    def request_started(self) -> None:
        self.state = "busy"  # no deadline while served: a timer that fires now does nothing

    def request_finished(self) -> None:
        self.state = "idle"
        self._arm(self.guard.limits.idle_timeout, "a request")

    def _arm(self, seconds: float, waiting_for: str) -> None:
        # The deadline is a time, checked by one timer that is moved only when the deadline
        # comes sooner than it would fire: on a busy keep-alive connection once per
        # header_timeout, where a timer made and cancelled at each state change cost four
        # timer handles a request.
        self._until = self._loop.time() + seconds
        self._seconds, self._waiting_for = seconds, waiting_for
        timer = self._timer
        if timer is None or timer.when() > self._until:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(self._until, self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self.transport is None or self.state == "busy":
            return  # request_finished arms the next deadline
        if self._loop.time() < self._until:
            self._timer = self._loop.call_at(self._until, self._check)
            return
        log.info(
            "http: closing connection from %s: waited %g s for %s",
            self.source,
            self._seconds,
            self._waiting_for,
        )
        self.transport.abort()


@dataclass(eq=False)
class ConnectionGuard:
    """The open HTTP connections, counted by source, with their deadlines."""

    limits: HttpLimits = field(default_factory=HttpLimits)
    by_source: Counter[str] = field(default_factory=Counter)
    open: dict[asyncio.BaseTransport, _GuardedProtocol] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    """Refusals by reason (per-source limit, connection limit)."""

    def admit(self, source: str) -> bool:
        if self.by_source[
            source
        ] >= self.limits.max_connections_per_source and not self.limits.proxies.trusts(source):
            self.refused["per-source limit"] += 1
            return False
        if self.by_source.total() >= self.limits.max_connections:
            self.refused["connection limit"] += 1
            return False
        self.by_source[source] += 1
        return True

    def close(self, transport: asyncio.BaseTransport, source: str) -> None:
        self.open.pop(transport, None)
        self.by_source[source] -= 1
        if self.by_source[source] <= 0:
            del self.by_source[source]

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory putting each of ``factory``'s protocols behind the guard."""
        return lambda: _GuardedProtocol(self, factory())

    def serving(self, request: web.Request) -> _GuardedProtocol | None:
        """Marks the connection of ``request`` busy; the caller calls ``request_finished`` on
        what this returns once the request is answered."""
        transport = request.transport
        connection = self.open.get(transport) if transport is not None else None
        if connection is not None:
            connection.request_started()
        return connection


class GuardedSite(ProblemSite):
    """A ``ProblemSite`` with every connection behind a ``ConnectionGuard``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        backlog: int,
        keepalive_timeout: float,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog, keepalive_timeout=keepalive_timeout)
        self._guard = guard

    def protocol_factory(self, handler: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return self._guard.wrap(handler)
