"""What the server asks at request time: for /metrics before each scrape, for /v1/ready.

Each question has a timeout (``[metrics] check_timeout``), so a hung database or media worker
makes a scrape or a readiness check answer "down" promptly instead of hanging the scraper or
the load balancer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from callrouter.media.control import MediaError, MediaWorkerProcess
from callrouter.metrics import Metrics
from callrouter.routing.sessions import Sessions

__all__ = [
    "database_answers",
    "media_workers_answer",
    "pool_figures",
    "scrape_refresh",
]


async def database_answers(pool: asyncpg.Pool[asyncpg.Record], within: float) -> bool:
    """Whether the database answers a query within ``within`` seconds."""
    try:
        await pool.fetchval("SELECT 1", timeout=within)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


def scrape_refresh(
    metrics: Metrics,
    pool: asyncpg.Pool[asyncpg.Record],
    workers: Sequence[MediaWorkerProcess],
    within: float,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """What each scrape asks first: is the database up, what has each media worker counted
    (all asked at once, so one hung worker costs one wait of ``within`` seconds, not one each)."""

    async def ask(worker: MediaWorkerProcess) -> None:
        try:
            totals = await asyncio.wait_for(worker.command("stats"), within)
        except (MediaError, TimeoutError):
            metrics.media_worker_up.labels(worker.name).set(0)
            return
        metrics.media_worker_up.labels(worker.name).set(1)
        metrics.worker_totals(worker.name, totals)

    async def refresh() -> None:
        metrics.database_up.set(await database_answers(pool, within))
        if not workers:
            metrics.media_worker_up.labels("0").set(0)  # none configured: none is up
            return
        await asyncio.gather(*(ask(worker) for worker in workers))

    return refresh


async def media_workers_answer(workers: Sequence[MediaWorkerProcess], within: float) -> bool:
    """Whether every media worker answers a ping within ``within`` seconds (a hung worker is as
    down as a dead one: the calls placed on it would not be recorded)."""

    async def answers(worker: MediaWorkerProcess) -> bool:
        try:
            await asyncio.wait_for(worker.command("ping"), within)
        except (MediaError, TimeoutError):
            return False
        return True

    return all(await asyncio.gather(*(answers(worker) for worker in workers)))


def pool_figures(visitor_sessions: Sessions) -> dict[str, tuple[int, int]]:
    """Per pool id: numbers leased now, exhaustions since the pool was loaded."""
    figures = {}
    for pool_id in list(visitor_sessions.pools):
        stats = visitor_sessions.stats(pool_id)
        if stats is not None:
            figures[str(pool_id)] = (stats.leased, stats.exhaustions)
    return figures
