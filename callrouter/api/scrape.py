"""/metrics: the Prometheus text format, outside the API's key auth.

Served on the API's port, or on a listener of its own (``[metrics] port``) that can be bound to
a private address. Each scrape first refreshes what must be asked for (the database, the media
worker's counters), so a scrape shows the state of that moment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callrouter.api.access_log import access_log_middleware
from callrouter.metrics import Metrics

__all__ = ["PATH", "Refresh", "add_metrics_route", "metrics_app"]

PATH = "/metrics"
Refresh = Callable[[], Awaitable[None]]


def add_metrics_route(app: web.Application, metrics: Metrics, refresh: Refresh) -> None:
    async def scrape(_request: web.Request) -> web.Response:
        await refresh()
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get(PATH, scrape)


def metrics_app(metrics: Metrics, refresh: Refresh) -> web.Application:
    """The application of a separate metrics listener: /metrics and nothing else."""
    app = web.Application(middlewares=[access_log_middleware(metrics)])
    add_metrics_route(app, metrics, refresh)
    return app
