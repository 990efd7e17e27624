"""Connection pools: one per process, with JSON codecs, created from a DSN."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = (
    "asyncpg.Pool[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
    " | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)


async def _init_connection(connection: asyncpg.Connection[Any]) -> None:
    for kind in ("json", "jsonb"):
        await connection.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection (for short-lived commands) with the same JSON codecs as the pool."""
    connection: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(dsn)
    await _init_connection(connection)
    return connection


async def _nothing_to_reset(_connection: asyncpg.Connection[Any]) -> None:
    """What runs instead of the reset query (asyncpg has rolled back a transaction left open).

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on
    every release, a round trip for every query made through the pool (a call costs several).
    callrouter keeps no session state on pool connections: advisory locks (migrations, cluster
    names and duties) and LISTEN have connections of their own, and nothing issues SET or holds
    a cursor past its transaction. Code that needs session state takes its own connection."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    wait_for_disk: bool = True,
    session_state: bool = False,
) -> asyncpg.Pool[asyncpg.Record]:
    """A connection pool whose json/jsonb columns read and write Python objects.

    :param wait_for_disk: False: a commit returns before its WAL is flushed
        (``synchronous_commit = off``): visible to every session at once and never torn, but
        the last few hundred milliseconds of commits are lost if PostgreSQL itself crashes.
    :param session_state: True for a pool whose users may leave state in a session (SET,
        LISTEN, an advisory lock, an open cursor): asyncpg's reset query then runs on each
        release. callrouter's pools leave none, so they go without it (an open transaction is
        still rolled back).
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        server_settings={} if wait_for_disk else {"synchronous_commit": "off"},
        reset=None if session_state else _nothing_to_reset,
    )
    assert pool is not None
    return pool


async def ensure_database(admin_dsn: str, name: str) -> bool:
    """Create database ``name`` if it does not exist; True when it was created."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        # Identifiers cannot be parameters; the name is ours, quoted anyway.
        await connection.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await connection.close()


class StoreConflict(Exception):
    """A write would duplicate a unique value; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StoreReferenceError(Exception):
    """A write names a related object that does not exist for this client."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def translate_violation(exc: asyncpg.PostgresError, fields: dict[str, str]) -> Exception:
    """Turn a constraint violation into the store's error naming the field, by constraint name.

    :param fields: constraint name -> request field.
    """
    constraint = getattr(exc, "constraint_name", None) or ""
    field = fields.get(constraint)
    if field is None:
        return exc
    if isinstance(exc, asyncpg.UniqueViolationError):
        return StoreConflict(field, "already exists")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return StoreReferenceError(field, "does not exist")
    return exc
