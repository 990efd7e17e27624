"""The API's one middleware: every rule a request meets on its way in and out, in order.

1. A request from a trusted proxy is taken to come from the client its X-Forwarded-For names,
   so every rule after it sees the client (``forwarded.py``).
2. Its connection is marked busy: no idle or header deadline while it is served
   (``connections.py``).
3. A CORS preflight of a swap-script route is answered here; it carries no pool to decide by.
4. Every failure leaves as problem+json; an unexpected one is logged, never leaked.
5. The answer of a swap-script route, errors included, carries the page's origin.
6. The access log line and the request counters see the final status, problems included.

These were five middlewares, each a coroutine frame, an await and a ``partial`` call more per
request on the swap script's heartbeat, the API's most frequent call (``bench/sessions.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from callrouter.api.access_log import AccessLog
from callrouter.api.connections import ConnectionGuard
from callrouter.api.forwarded import TrustedProxies
from callrouter.api.problems import Problem, conflict, invalid
from callrouter.api.sessions import allow_origin, is_cors, preflight
from callrouter.store.availability import OUTAGE_ERRORS
from callrouter.store.database import StoreConflict, StoreReferenceError

__all__ = ["DATABASE_RETRY_AFTER", "ApiMiddleware", "as_problem"]

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DATABASE_RETRY_AFTER = 5
"""Seconds a client is told to wait while the database is away (a restart takes a few)."""


def as_problem(exc: Exception) -> Problem | None:
    """The problem for an exception raised below a handler, or None to let it propagate."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, StoreConflict):
        return conflict(exc.field, str(exc))
    if isinstance(exc, StoreReferenceError):
        return invalid(exc.field, str(exc))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return Problem(413, "the request body is larger than this server accepts")
    if isinstance(exc, OUTAGE_ERRORS):
        # The database is away (killed, restarting): a client retries later, it did nothing
        # wrong, and a load balancer may send it to another node.
        return Problem(
            503,
            "the database is unavailable; try again shortly",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return Problem(exc.status, exc.reason, headers=headers)
    return None


@dataclass(eq=False, slots=True)
class ApiMiddleware:
    """The rules above, with what they need."""

    access: AccessLog
    guard: ConnectionGuard | None = None
    """Told when each request is being served (the site must put connections behind it)."""
    proxies: TrustedProxies | None = None
    """Proxies whose X-Forwarded-For is believed; None when there are none."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        started = time.perf_counter()
        if self.proxies is not None:
            request = self.proxies.resolve(request)
        connection = self.guard.serving(request) if self.guard is not None else None
        status = 500
        try:
            cors = is_cors(request.path)
            if cors and request.method == "OPTIONS":
                response: web.StreamResponse = preflight()
            else:
                try:
                    response = await handler(request)
                except Exception as exc:
                    problem = as_problem(exc)
                    if problem is None:
                        if isinstance(exc, web.HTTPException):
                            raise  # a redirect or another answer that is not an error
                        log.exception("unhandled error on %s %s", request.method, request.path)
                        problem = Problem(500, "internal error; it has been logged")
                    response = problem.response(request.path)
            if cors:
                allow_origin(request.headers.get("Origin"), response)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.access.record(request, status, time.perf_counter() - started)
            if connection is not None:
                connection.request_finished()
