"""The SQL side of ``callrouter restore``: is the target empty, and which recordings it holds."""

from __future__ import annotations

from uuid import UUID

from callrouter.store.database import Executor


async def is_empty(db: Executor) -> bool:
    """Whether the database has no table of its own (a restore never merges into data)."""
    return not await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public')"
    )


async def recording_ids(db: Executor) -> list[UUID]:
    """Every recording row, across all clients (the restore checks each one's key)."""
    return [row["id"] for row in await db.fetch("SELECT id FROM recordings ORDER BY id")]


async def forget_recordings(db: Executor, ids: list[UUID]) -> int:
    """Delete the rows of recordings whose keys are gone; migration 0007's trigger queues their
    files for disposal, which ``serve`` carries out at start."""
    result = await db.execute("DELETE FROM recordings WHERE id = ANY($1::uuid[])", ids)
    return int(result.split()[-1])
