"""A stop's steps are bounded: one that never ends is left, named, and forced to end."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import asyncpg

from callrouter.stop_steps import push_bounded
from callrouter.store.database import create_pool


async def test_a_pool_whose_connection_is_never_given_back_is_terminated_and_named(
    database_dsn: str,
) -> None:
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    held = await pool.acquire()  # a stuck task's connection: pool.close() waits for it forever
    said: list[str] = []
    async with AsyncExitStack() as stack:
        push_bounded(
            stack, "the database pool", pool.close, said.append, abandon=pool.terminate, seconds=0.5
        )
    assert said == ["stopping: the database pool did not stop within 0.5 s; going on without it"]
    assert pool.is_closing()
    assert await _no_other_sessions(database_dsn)
    del held


async def test_a_step_that_ends_in_time_is_not_abandoned(database_dsn: str) -> None:
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    said: list[str] = []
    abandoned: list[bool] = []
    async with AsyncExitStack() as stack:
        push_bounded(
            stack,
            "the database pool",
            pool.close,
            said.append,
            abandon=lambda: abandoned.append(True),
            seconds=30,
        )
    assert said == []
    assert abandoned == []
    assert await _no_other_sessions(database_dsn)


async def _no_other_sessions(dsn: str) -> bool:
    """Whether this database's other sessions end within 10 s (a backend leaves
    pg_stat_activity a moment after its client closed the socket)."""
    connection: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(dsn)
    try:
        for _ in range(200):
            if not await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ):
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await connection.close()
