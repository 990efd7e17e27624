"""Number leases: one row per pool number in ``number_leases`` (migration 0013), the truth every
node's in-memory index follows.

Each change is one statement on one row per number, so PostgreSQL serialises what several
nodes do to a number: leases are taken by one UPDATE whose candidates are picked ``FOR UPDATE
SKIP LOCKED`` (two nodes racing for the pool's next numbers each get different ones; a node's
concurrent new visits take theirs in one statement, ``take_many``), renewed and ended only by
the session holding it. Times are the node's clock, passed in (``now``), as in the pool.

The pick keeps the pool's exhaustion policies: the number released longest ago whose grace is
over; when there is none, ``reuse_oldest`` takes the number released longest ago even in its
grace, then the live lease idle longest (its session loses it, its row locked and written in
the same transaction; a session whose row another transaction holds is being served, not
idle), and ``default_number`` takes nothing.

Renewals are written behind (``renew_many``, one statement per batch): a node answers a page
that is still open from its index and writes the new expiry within ``FLUSH_SECONDS``. A
renewal only moves an expiry later, so the row being a flush behind only makes a lease look
like it ends sooner; ``take`` therefore counts a lease as free (or as in its grace) only once
its stored expiry is ``PENDING_RENEWAL_SECONDS`` past, so it never gives away a number whose
holder's renewal is still on its way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor

__all__ = [
    "FLUSH_SECONDS",
    "LEASE_CHANNEL",
    "PENDING_RENEWAL_SECONDS",
    "SESSION_CHANNEL",
    "LeaseRow",
    "Renewal",
    "Taken",
]

LEASE_CHANNEL = "lease_changed"
"""Each change of a lease row, with the row as JSON (migration 0013's trigger)."""
SESSION_CHANNEL = "session_changed"
"""A session whose attribution changed, or that was deleted: its id."""
FLUSH_SECONDS = 0.25
"""A renewal served from a node's memory is written at most this long after (``renew_many``)."""
PENDING_RENEWAL_SECONDS = 2.0
"""How long past its stored expiry a lease may still have a renewal on its way: the flush
interval, a flush's own time on a loaded database, and the nodes' clocks disagreeing by up to
a second. ``take`` takes no number sooner."""

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


@dataclass(frozen=True, slots=True)
class Renewal:
    """A page view or close of a live lease, served from memory, to write."""

    number: str
    client_id: UUID
    session_id: UUID
    last_seen: float
    expires_at: float
    ended: bool


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
    """``take_many`` for one session."""
    (taken,) = await take_many(
        db,
        pool_id=pool_id,
        holders=[(session_id, visitor_id)],
        now=now,
        hold=hold,
        grace=grace,
        policy=policy,
    )
    return taken


async def take_many(
    db: Executor,
    *,
    pool_id: UUID,
    holders: Sequence[tuple[UUID, str | None]],
    now: float,
    hold: float,
    grace: float,
    policy: str,
) -> list[Taken | None]:
    """Lease the pool's next numbers to these (session id, visitor id) holders, one number
    each, in one statement: the first holder gets the number the pool would give first, and
    so on. None for each holder the pool gives none (exhausted under ``default_number``, or
    every candidate left is being leased by someone else this instant, or is the live lease
    of a visit being served this instant).

    The revoked sessions' stored leases end now, in the same statement.
    """
    if not holders:
        return []
    records = await db.fetch(
        f"""WITH args AS (
                -- A lease whose stored expiry is less than PENDING_RENEWAL_SECONDS past may
                -- have been renewed on its node and not written yet: it counts as live.
                SELECT $4::timestamptz - $8::float8 * interval '1 second' AS settled,
                       $4::timestamptz - greatest($6::float8, $8::float8) * interval '1 second'
                           AS graced
            ), pick AS (
                -- Released longest ago first (never leased before all), then, for
                -- reuse_oldest, the live leases idle longest: a lease's end is its last
                -- activity plus the pool's hold, so one index order serves all three.
                SELECT number, client_id, session_id AS previous, expires_at,
                       CASE WHEN expires_at IS NULL OR expires_at < graced THEN 0
                            WHEN expires_at <= settled THEN 1 ELSE 2 END AS tier
                  FROM number_leases, args
                 WHERE pool_id = $1
                   AND ($7::text = 'reuse_oldest' OR expires_at IS NULL OR expires_at < graced)
                 ORDER BY expires_at NULLS FIRST
                 LIMIT cardinality($2::uuid[])
                   FOR UPDATE OF number_leases SKIP LOCKED
            ), idle AS (
                -- A live lease is taken only with its session's row, locked here, so that the
                -- revocation below always reaches it. A row another transaction holds is a
                -- page view, heartbeat or erasure of that visit under way: it is not idle,
                -- and its lease stays (waiting for it could deadlock with that page view,
                -- which holds its row and then waits for this lease).
                SELECT s.id FROM sessions s JOIN pick p ON s.id = p.previous
                                                       AND s.client_id = p.client_id
                 WHERE p.tier = 2
                   FOR UPDATE OF s SKIP LOCKED
            ), ranked AS (
                SELECT pick.*,
                       row_number() OVER (ORDER BY expires_at NULLS FIRST, number) AS place
                  FROM pick
                 WHERE tier < 2 OR previous IN (SELECT id FROM idle)
            ), wanted AS (
                SELECT * FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY
                           AS w(session_id, visitor_id, place)
            ), leased AS (
                UPDATE number_leases l
                   SET session_id = w.session_id, visitor_id = w.visitor_id, leased_at = $4,
                       last_seen_at = $4, expires_at = $4 + $5::float8 * interval '1 second',
                       ended = false, version = l.version + 1
                  FROM ranked JOIN wanted w USING (place)
                 WHERE l.number = ranked.number
             RETURNING {", ".join("l." + c for c in COLUMNS.split(", "))},
                       ranked.tier, ranked.previous, w.place
            ), revoked AS (
                -- The sessions that lost their numbers: their rows are locked above (idle),
                -- so this waits for nothing and nothing else wrote them since.
                UPDATE sessions s SET lease_expires_at = least(s.lease_expires_at, $4)
                  FROM leased
                 WHERE leased.tier = 2 AND s.id = leased.previous
                   AND s.client_id = leased.client_id
            )
            SELECT * FROM leased""",
        pool_id,
        [session_id for session_id, _ in holders],
        [visitor_id for _, visitor_id in holders],
        _stamp(now),
        hold,
        grace,
        policy,
        PENDING_RENEWAL_SECONDS,
    )
    taken: list[Taken | None] = [None] * len(holders)
    for record in records:
        revoked = record["previous"] if record["tier"] == 2 else None
        taken[record["place"] - 1] = Taken(_row(record), record["tier"] > 0, revoked)
    return taken


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


async def renew_many(db: Executor, renewals: Sequence[Renewal]) -> list[LeaseRow]:
    """Write renewals served from memory, in one statement: each where its session still holds
    the number (a lease taken by another session stays taken), never moving an expiry or a
    last activity earlier, with the sessions' rows. The rows renewed; a renewal missing from
    them lost its number."""
    records = await db.fetch(
        f"""WITH pending AS (
                SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::timestamptz[],
                                     $5::timestamptz[], $6::bool[])
                           AS p(number, client_id, session_id, seen, expires, ended)
            ), renewed AS (
                UPDATE number_leases l
                   SET last_seen_at = greatest(l.last_seen_at, p.seen),
                       expires_at = greatest(l.expires_at, p.expires),
                       ended = CASE WHEN p.seen >= l.last_seen_at THEN p.ended ELSE l.ended END,
                       version = l.version + 1
                  FROM pending p
                 WHERE l.number = p.number AND l.session_id = p.session_id
                   AND l.client_id = p.client_id
             RETURNING {", ".join("l." + c for c in COLUMNS.split(", "))}
            ), seen AS (
                UPDATE sessions s
                   SET last_seen_at = greatest(s.last_seen_at, p.seen),
                       ended = CASE WHEN p.seen >= s.last_seen_at THEN p.ended ELSE s.ended END,
                       lease_expires_at = coalesce(
                           r.expires_at, least(s.lease_expires_at, p.seen))
                  FROM pending p LEFT JOIN renewed r ON r.session_id = p.session_id
                 WHERE s.id = p.session_id AND s.client_id = p.client_id
            )
            SELECT * FROM renewed""",
        [r.number for r in renewals],
        [r.client_id for r in renewals],
        [r.session_id for r in renewals],
        [_stamp(r.last_seen) for r in renewals],
        [_stamp(r.expires_at) for r in renewals],
        [r.ended for r in renewals],
    )
    return [_row(record) for record in records]


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
