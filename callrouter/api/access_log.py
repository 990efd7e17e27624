"""The HTTP access log: one line per request, and the HTTP figures for /metrics.

A line names the method, the route template (``/v1/calls/{call_id}``, not the path: ids and
query strings stay out), the status, the time taken and the id of the API key used. Never the
key, never a body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter

from callrouter.api.auth import KEY_ID
from callrouter.logs import info_event
from callrouter.metrics import Metrics

__all__ = ["METHODS", "AccessLog", "access_log_middleware", "route_of"]

log = logging.getLogger("callrouter.access")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route template that matched, or "unmatched" (a 404 or 405 for an unknown path)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods counted and kept by name. Any other a client sends is counted as ``OTHER``:
aiohttp's C parser takes some 30 (WebDAV's and others), its pure-Python one any token, and
each new name used to make a counter and a table entry that lived as long as the server."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What every request of one (method, route, status) shares, made once: the routes and
    statuses are few, and these were a third of the access log's time per request."""

    head: str
    """The line's start, ``POST /v1/sessions/{session_id}/heartbeat 200 ``."""
    counter: Counter | None
    """The requests counter's child (``labels`` takes a lock and builds a key per call)."""


@dataclass(eq=False, slots=True)
class AccessLog:
    """Writes a request's line and counts it."""

    metrics: Metrics | None
    outcomes: dict[tuple[str, str, int], _Outcome] = field(default_factory=dict)

    def record(self, request: web.Request, status: int, elapsed: float) -> None:
        """:param elapsed: seconds from the request's arrival at the application to its answer."""
        route = route_of(request)
        method = request.method if request.method in METHODS else "OTHER"
        outcome = self.outcomes.get((method, route, status))
        if outcome is None:
            outcome = self.outcomes[method, route, status] = _Outcome(
                f"{method} {route} {status} ",
                None
                if self.metrics is None
                else self.metrics.http_requests.labels(method, route, str(status)),
            )
        key_id = request.get(KEY_ID)
        milliseconds = elapsed * 1000
        info_event(
            log,
            f"{outcome.head}{milliseconds:.1f} ms key {key_id or '-'}",
            {
                "event": "http.request",
                "method": method,
                "route": route,
                "status": status,
                # Whole microseconds: round(x, 3) takes five times as long for the same figure.
                "duration_ms": round(elapsed * 1e6) / 1000,
                "key_id": str(key_id) if key_id else None,
            },
        )
        if outcome.counter is not None:
            outcome.counter.inc()
            if self.metrics is not None:
                self.metrics.http_duration.observe(elapsed)


def access_log_middleware(metrics: Metrics | None) -> Middleware:
    """The access log alone, for an application without the API's front door (the separate
    metrics listener): it sees the final status."""
    access = AccessLog(metrics)

    @web.middleware
    async def access_log(request: web.Request, handler: _Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            access.record(request, status, time.perf_counter() - started)

    return access_log
