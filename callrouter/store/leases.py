"""Number leases: one row per pool number in ``number_leases`` (migration 0013), the truth every
node's in-memory index follows.

Each change is one statement on one row, so PostgreSQL serialises what several nodes do to a
number: a lease is taken by one UPDATE whose candidate is picked ``FOR UPDATE SKIP LOCKED``
(two nodes racing for the pool's next number each get a different one), renewed and ended only
by the session holding it. Times are the node's clock, passed in (``now``), as in the pool.

The pick keeps the pool's exhaustion policies: the number released longest ago whose grace is
over; when there is none, ``reuse_oldest`` takes the number released longest ago even in its
grace, then the live lease idle longest (its session loses it), and ``default_number`` takes
nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor

__all__ = ["LEASE_CHANNEL", "SESSION_CHANNEL", "LeaseRow", "Taken"]

LEASE_CHANNEL = "lease_changed"
"""Each change of a lease row, with the row as JSON (migration 0013's trigger)."""
SESSION_CHANNEL = "session_changed"
"""A session whose attribution changed, or that was deleted: its id."""

COLUMNS = (
    "number, client_id, pool_id, session_id, visitor_id, leased_at, last_seen_at, expires_at, "
    "ended, version"
)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A number's lease as stored: its holder (or last holder), or none ever."""

    number: str
    client_id: UUID
    pool_id: UUID
    session_id: UUID | None
    visitor_id: str | None
    leased_at: datetime | None
    last_seen_at: datetime | None
    expires_at: datetime | None
    ended: bool
    version: int

    @classmethod
    def from_notification(cls, payload: str) -> LeaseRow:
        """The row a ``lease_changed`` NOTIFY carries (``row_to_json``)."""
        row: dict[str, Any] = json.loads(payload)

        def stamp(key: str) -> datetime | None:
            value = row[key]
            return datetime.fromisoformat(value).astimezone(UTC) if value else None

        return cls(
            number=row["number"],
            client_id=UUID(row["client_id"]),
            pool_id=UUID(row["pool_id"]),
            session_id=UUID(row["session_id"]) if row["session_id"] else None,
            visitor_id=row["visitor_id"],
            leased_at=stamp("leased_at"),
            last_seen_at=stamp("last_seen_at"),
            expires_at=stamp("expires_at"),
            ended=bool(row["ended"]),
            version=int(row["version"]),
        )


@dataclass(frozen=True, slots=True)
class Taken:
    """A lease just taken: the row, and whether the pool was exhausted to give it (the number
    was still in its grace, or ``revoked`` names the session that lost it)."""

    row: LeaseRow
    exhausted: bool
    revoked: UUID | None


def _stamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _row(record: Any) -> LeaseRow:
    return LeaseRow(**{key: record[key] for key in LeaseRow.__slots__})


async def take(
    db: Executor,
    *,
    pool_id: UUID,
    session_id: UUID,
    visitor_id: str | None,
    now: float,
    hold: float,
    grace: float,
    policy: str,
) -> Taken | None:
    """Lease the pool's next number to ``session_id``; None when the pool gives none (exhausted
    under ``default_number``, or every candidate is being leased by someone else this instant).

    The revoked session's stored lease ends now (in the caller's transaction).
    """
    record = await db.fetchrow(
        f"""WITH args AS (
                SELECT $4::timestamptz AS now,
                       $4::timestamptz - $6::float8 * interval '1 second' AS graced
            ), pick AS (
                -- Released longest ago first (never leased before all), then, for
                -- reuse_oldest, the live lease idle longest: a lease's end is its last
                -- activity plus the pool's hold, so one index order serves all three.
                SELECT number, session_id AS previous,
                       CASE WHEN expires_at IS NULL OR expires_at < graced THEN 0
                            WHEN expires_at <= now THEN 1 ELSE 2 END AS tier
                  FROM number_leases, args
                 WHERE pool_id = $1
                   AND ($7::text = 'reuse_oldest' OR expires_at IS NULL OR expires_at < graced)
                 ORDER BY expires_at NULLS FIRST
                 LIMIT 1
                   FOR UPDATE OF number_leases SKIP LOCKED
            ), leased AS (
                UPDATE number_leases l
                   SET session_id = $2, visitor_id = $3, leased_at = $4, last_seen_at = $4,
                       expires_at = $4 + $5::float8 * interval '1 second', ended = false,
                       version = l.version + 1
                  FROM pick
                 WHERE l.number = pick.number
             RETURNING {", ".join("l." + c for c in COLUMNS.split(", "))},
                       pick.tier, pick.previous
            )
            SELECT * FROM leased""",
        pool_id,
        session_id,
        visitor_id,
        _stamp(now),
        hold,
        grace,
        policy,
    )
    if record is None:
        return None
    revoked = record["previous"] if record["tier"] == 2 else None
    if revoked is not None:
        # A statement of its own: its snapshot must see the revoked session even if that was
        # created after the statement above began. A page view of that visit holding its row
        # writes its own lease's end anyway.
        await db.execute(
            """UPDATE sessions SET lease_expires_at = least(lease_expires_at, $3)
                WHERE id IN (SELECT id FROM sessions WHERE id = $1 AND client_id = $2
                               FOR UPDATE SKIP LOCKED)""",
            revoked,
            record["client_id"],
            _stamp(now),
        )
    return Taken(_row(record), record["tier"] > 0, revoked)


async def renew(
    db: Executor,
    *,
    client_id: UUID,
    session_id: UUID,
    number: str | None,
    now: float,
    hold: float,
    ended: bool = False,
) -> LeaseRow | None:
    """The session's page is still open (or was just closed, ``ended``): its lease on ``number``
    lives ``hold`` seconds from now, and its stored session says so, in one statement. None
    when the session no longer holds a live lease on ``number``: its activity is written, and
    its stored lease ends now at the latest.
    """
    record = await db.fetchrow(
        f"""WITH renewed AS (
                UPDATE number_leases
                   SET last_seen_at = $3, expires_at = $3 + $4::float8 * interval '1 second',
                       ended = $5, version = version + 1
                 WHERE number = $1 AND session_id = $2 AND expires_at > $3
                   AND client_id = $6
             RETURNING {COLUMNS}
            ), seen AS (
                UPDATE sessions
                   SET last_seen_at = greatest(last_seen_at, $3), ended = $5,
                       lease_expires_at = coalesce(
                           (SELECT expires_at FROM renewed), least(lease_expires_at, $3))
                 WHERE id = $2 AND client_id = $6
            )
            SELECT * FROM renewed""",
        number,
        session_id,
        _stamp(now),
        hold,
        ended,
        client_id,
    )
    return _row(record) if record else None


async def reconcile(
    db: Executor, *, number: str, session_id: UUID, last_seen: float, expires: float, ended: bool
) -> LeaseRow | None:
    """Write a renewal a node served from memory while the database was away, if the session
    still holds the number (nobody could lease it meanwhile unless another node reached the
    database: then that node's lease stands). None when it does not."""
    record = await db.fetchrow(
        f"""UPDATE number_leases
               SET last_seen_at = greatest(last_seen_at, $3),
                   expires_at = greatest(expires_at, $4), ended = $5, version = version + 1
             WHERE number = $1 AND session_id = $2
         RETURNING {COLUMNS}""",
        number,
        session_id,
        _stamp(last_seen),
        _stamp(expires),
        ended,
    )
    return _row(record) if record else None


async def of_pool(db: Executor, pool_id: UUID) -> list[LeaseRow]:
    """Every number's row in a pool (a node's index is built from these)."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM number_leases WHERE pool_id = $1 ORDER BY number", pool_id
    )
    return [_row(row) for row in rows]


async def of_number(db: Executor, number: str) -> LeaseRow | None:
    """One number's row (a call to a number the index cannot vouch for)."""
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM number_leases WHERE number = $1", number)
    return _row(row) if row else None
