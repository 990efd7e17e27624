"""The connection pool: what a query through it costs."""

from __future__ import annotations

from typing import Any

from callrouter.store.database import create_pool


async def test_a_released_connection_costs_no_reset_round_trip(database_dsn: str) -> None:
    sent: list[str] = []

    def note(record: Any) -> None:
        sent.append(record.query)

    pool = await create_pool(database_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            connection.add_query_logger(note)
        for _ in range(3):
            assert await pool.fetchval("SELECT 1") == 1
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT 2")
    finally:
        await pool.close()
    assert sent == ["SELECT 1"] * 3 + ["BEGIN;", "SELECT 2", "COMMIT;"]
