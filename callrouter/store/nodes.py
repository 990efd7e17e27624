"""The nodes that share one database: their names, heartbeats and advisory locks.

A node is live while its database session holds the advisory lock (``NODE_LOCK``, its id):
PostgreSQL drops the lock the moment that session ends, and a killed process's socket closes
at once. The heartbeat, written with the database's clock so that skewed node clocks still
agree, says when a node was last known alive: a dead node's calls end then.

Two-key advisory locks (``pg_try_advisory_lock(int, int)``) never meet the migrations' one-key
lock: PostgreSQL tells them apart by ``objsubid`` (1 for one key, 2 for two).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from callrouter.store.database import Executor

NODE_LOCK = 0x4E4F4445  # "NODE": held by a live node's session, second key its id
DUTY_LOCK = 0x44555459  # "DUTY": held by the node doing a once-only duty, second key the duty

HOLDERS = """
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = {kind} AND l.objid::bigint = {key}
"""
"""A lock's holders in this database (pg_locks lists every database's)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A node name taken for this session."""

    id: int
    last_heartbeat: datetime
    """The previous holder's last heartbeat (the registration time for a new name)."""


@dataclass(frozen=True, slots=True)
class Holder:
    """The live node that holds a name this session wanted."""

    started_at: datetime
    heartbeat_at: datetime


async def claim(db: Executor, name: str) -> Claim | Holder:
    """Take ``name`` for this session (``db`` must be one connection, kept open while the node
    runs): the claim, or the live node that holds the name."""
    await db.execute("INSERT INTO nodes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name)
    row = await db.fetchrow("SELECT id, started_at, heartbeat_at FROM nodes WHERE name = $1", name)
    assert row is not None  # inserted above, and nodes are never deleted
    if not await db.fetchval("SELECT pg_try_advisory_lock($1, $2)", NODE_LOCK, row["id"]):
        return Holder(row["started_at"], row["heartbeat_at"])
    await db.execute(
        "UPDATE nodes SET started_at = now(), heartbeat_at = now() WHERE id = $1", row["id"]
    )
    return Claim(row["id"], row["heartbeat_at"])


async def beat(db: Executor, node_id: int) -> None:
    await db.execute("UPDATE nodes SET heartbeat_at = now() WHERE id = $1", node_id)


async def take_duty(db: Executor, duty: int) -> bool:
    """Try to become the one node doing ``duty`` (held until this session ends)."""
    return bool(await db.fetchval("SELECT pg_try_advisory_lock($1, $2)", DUTY_LOCK, duty))


async def duty_holder(db: Executor, duty: int) -> str | None:
    """The name of the live node doing ``duty``, if any (for operators and tests): the node
    whose session holds both the duty's lock and a node lock."""
    name: str | None = await db.fetchval(
        """SELECT n.name FROM pg_locks d
           JOIN pg_locks k ON k.pid = d.pid AND k.database = d.database
                AND k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
                AND k.classid::bigint = $3
           JOIN nodes n ON n.id = k.objid::bigint
           WHERE d.locktype = 'advisory' AND d.granted AND d.objsubid = 2
             AND d.classid::bigint = $1 AND d.objid::bigint = $2
             AND d.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        DUTY_LOCK,
        duty,
        NODE_LOCK,
    )
    return name
