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

__all__ = ["AccessLog", "access_log_middleware", "route_of"]

log = logging.getLogger("callrouter.access")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route template that matched, or "unmatched" (a 404 or 405 for an unknown path)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@dataclass(eq=False, slots=True)
class AccessLog:
    """Writes a request's line and counts it."""

    metrics: Metrics | None
    counters: dict[tuple[str, str, int], Counter] = field(default_factory=dict)
    """Each (method, route, status) counter's child, looked up once (``labels`` takes a lock
    and builds a key per call); the routes and statuses are few."""

    def record(self, request: web.Request, status: int, elapsed: float) -> None:
        """:param elapsed: seconds from the request's arrival at the application to its answer."""
        route = route_of(request)
        method = request.method
        key_id = request.get(KEY_ID)
        milliseconds = elapsed * 1000
        info_event(
            log,
            f"{method} {route} {status} {milliseconds:.1f} ms key {key_id or '-'}",
            {
                "event": "http.request",
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(milliseconds, 3),
                "key_id": str(key_id) if key_id else None,
            },
        )
        if self.metrics is not None:
            labels = (method, route, status)
            counter = self.counters.get(labels)
            if counter is None:
                counter = self.counters[labels] = self.metrics.http_requests.labels(
                    method, route, str(status)
                )
            counter.inc()
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
