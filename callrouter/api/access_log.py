"""The HTTP access log: one line per request, and the HTTP figures for /metrics.

A line names the method, the route template (``/v1/calls/{call_id}``, not the path: ids and
query strings stay out), the status, the time taken and the id of the API key used. Never the
key, never a body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter

from callrouter.api.auth import KEY_ID
from callrouter.metrics import Metrics

__all__ = ["access_log_middleware", "route_of"]

log = logging.getLogger("callrouter.access")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route template that matched, or "unmatched" (a 404 or 405 for an unknown path)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def access_log_middleware(metrics: Metrics | None) -> Middleware:
    """The outermost middleware: it sees the final status, problem responses included."""
    # Each (method, route, status) counter's child, looked up once (``labels`` takes a lock
    # and builds a key per call); the routes and statuses are few.
    counters: dict[tuple[str, str, int], Counter] = {}

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
            elapsed = time.perf_counter() - started
            route = route_of(request)
            key_id = request.get(KEY_ID)
            log.info(
                "%s %s %d %.1f ms key %s",
                request.method,
                route,
                status,
                elapsed * 1000,
                key_id or "-",
                extra={
                    "event": "http.request",
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "key_id": str(key_id) if key_id else None,
                },
            )
            if metrics is not None:
                labels = (request.method, route, status)
                counter = counters.get(labels)
                if counter is None:
                    counter = counters[labels] = metrics.http_requests.labels(
                        request.method, route, str(status)
                    )
                counter.inc()
                metrics.http_duration.observe(elapsed)

    return access_log
