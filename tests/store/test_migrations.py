"""Migrations: in order, once, in transactions; a newer database is refused."""

from __future__ import annotations

import asyncpg
import pytest

from callrouter.store.migrations import MigrationError, available, migrate


def test_shipped_migrations_are_numbered_without_gaps_and_described() -> None:
    migrations = available()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.summary for m in migrations)


async def test_migrating_twice_changes_nothing(database_dsn: str) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        schema_before = await connection.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        assert await migrate(connection) == []
        schema_after = await connection.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        assert schema_before == schema_after
        versions = await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r["version"] for r in versions] == [m.version for m in available()]
    finally:
        await connection.close()


async def test_a_database_newer_than_the_code_is_refused(database_dsn: str) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        await connection.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')"
        )
        with pytest.raises(MigrationError, match="schema version 9999, newer than this"):
            await migrate(connection)
    finally:
        await connection.close()
