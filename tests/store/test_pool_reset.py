"""A pool whose users leave no session state skips asyncpg's reset query on release, and still
rolls back a transaction left open. PostgreSQL itself says which query a backend ran last."""

from __future__ import annotations

import asyncpg
import pytest

from callrouter.store.database import create_pool

LAST_QUERY = "SELECT query FROM pg_stat_activity WHERE pid = $1"


@pytest.mark.parametrize(("session_state", "reset"), [(True, True), (False, False)])
async def test_release_runs_the_reset_query_only_for_pools_that_keep_session_state(
    database_dsn: str, session_state: bool, reset: bool
) -> None:
    pool = await create_pool(database_dsn, min_size=1, max_size=1, session_state=session_state)
    observer = await asyncpg.connect(database_dsn)
    try:
        async with pool.acquire() as connection:
            pid = connection.get_server_pid()
            await connection.fetchval("SELECT 'the last statement of its user'")
        last = await observer.fetchval(LAST_QUERY, pid)
        assert ("RESET ALL" in last) is reset, last
        assert (last == "SELECT 'the last statement of its user'") is not reset
    finally:
        await observer.close()
        await pool.close()


async def test_a_transaction_left_open_is_rolled_back_without_the_reset_query(
    database_dsn: str,
) -> None:
    pool = await create_pool(database_dsn, min_size=1, max_size=1, session_state=False)
    try:
        connection = await pool.acquire()
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("CREATE TABLE left_open (x int)")
        await pool.release(connection)
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await pool.close()
