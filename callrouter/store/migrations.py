"""Numbered plain-SQL migrations, each applied in one transaction together with its version row.

Files are ``migrations/NNNN_name.sql``; the first comment line of each is its changelog entry.
An advisory lock serialises concurrent runs, so two processes starting at once apply each
migration exactly once. A database that has a version this code does not know is refused:
running old code against a newer schema would corrupt it quietly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant that names "callrouter migrations" among advisory locks.
_LOCK_KEY = 0x43_52_4D_49_47  # "CRMIG"


class MigrationError(Exception):
    """The schema cannot be brought to this code's version."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def summary(self) -> str:
        """The changelog line: the file's first comment."""
        first = self.sql.lstrip().splitlines()[0] if self.sql.strip() else ""
        return first.removeprefix("--").strip()


def available() -> list[Migration]:
    """All migrations shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("callrouter.store").joinpath("migrations").iterdir():
        if (m := _FILE.match(entry.name)) is not None:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration numbers must run 1..n without gaps, found {versions}")
    return found


async def migrate(connection: asyncpg.Connection) -> list[Migration]:
    """Apply every migration not yet recorded; returns the ones applied now (empty: up to date)."""
    migrations = available()
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version     integer PRIMARY KEY,
                   name        text NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            row["version"]
            for row in await connection.fetch("SELECT version FROM schema_migrations")
        }
        newest = migrations[-1].version if migrations else 0
        if done and max(done) > newest:
            raise MigrationError(
                f"the database is at schema version {max(done)}, newer than this callrouter "
                f"(which knows up to {newest}); upgrade callrouter before starting it"
            )
        applied: list[Migration] = []
        for migration in migrations:
            if migration.version in done:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
