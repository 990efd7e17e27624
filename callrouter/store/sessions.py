"""Visitor sessions and form submissions: written as each swap-script request is served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor

SESSION_COLUMNS = (
    "id, client_id, pool_id, visitor_id, number, attribution, user_agent, ip_network, "
    "created_at, last_seen_at, lease_expires_at, ended, touches, journey"
)
FORM_COLUMNS = "id, client_id, session_id, form, fields, attribution, page, submitted_at"


@dataclass(slots=True)
class SessionRecord:
    """A visit as stored: who (first-party id, network), where from, which number it holds."""

    id: UUID
    client_id: UUID
    pool_id: UUID
    visitor_id: str | None
    number: str | None
    attribution: dict[str, Any]
    user_agent: str | None
    ip_network: str | None
    created_at: datetime
    last_seen_at: datetime
    lease_expires_at: datetime | None
    ended: bool
    touches: dict[str, Any] = field(default_factory=dict)
    """{"first": facts, "last": facts}: the visitor's first touch and latest non-direct one."""
    journey: list[dict[str, Any]] = field(default_factory=list)
    """The visit's page views, oldest first and bounded: {"url", "title", "at"}."""


_SAVE = f"""INSERT INTO sessions ({SESSION_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (id) DO UPDATE SET
        number = EXCLUDED.number,
        attribution = EXCLUDED.attribution,
        touches = EXCLUDED.touches,
        journey = EXCLUDED.journey,
        visitor_id = EXCLUDED.visitor_id,
        last_seen_at = EXCLUDED.last_seen_at,
        lease_expires_at = EXCLUDED.lease_expires_at,
        ended = EXCLUDED.ended"""


def _values(r: SessionRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.client_id,
        r.pool_id,
        r.visitor_id,
        r.number,
        r.attribution,
        r.user_agent,
        r.ip_network,
        r.created_at,
        r.last_seen_at,
        r.lease_expires_at,
        r.ended,
        r.touches,
        r.journey,
    )


async def save(db: Executor, record: SessionRecord) -> None:
    """Insert a new session or update the facts of a known one."""
    await db.execute(_SAVE, *_values(record))


async def save_many(db: Executor, records: list[SessionRecord]) -> None:
    """``save`` for many sessions, in one round trip."""
    if records:
        await db.executemany(_SAVE, [_values(r) for r in records])


async def latest_of_visitor(
    db: Executor, client_id: UUID, pool_id: UUID, visitor_id: str
) -> SessionRecord | None:
    """The visitor's latest session in a pool, locked until the transaction ends: two page
    views of one visit (two tabs, two nodes) continue it one after the other."""
    return (await latest_of_visitors(db, client_id, pool_id, [visitor_id])).get(visitor_id)


async def latest_of_visitors(
    db: Executor, client_id: UUID, pool_id: UUID, visitor_ids: Sequence[str]
) -> dict[str, SessionRecord]:
    """``latest_of_visitor`` for several visitors in one statement, by visitor id (sorted
    first, so that two transactions locking the same visitors' sessions lock them in one
    order)."""
    rows = await db.fetch(
        f"""SELECT s.* FROM unnest($3::text[]) AS v(visitor_id)
            CROSS JOIN LATERAL (
                SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE client_id = $1 AND visitor_id = v.visitor_id AND pool_id = $2
                 ORDER BY last_seen_at DESC LIMIT 1 FOR UPDATE) AS s""",
        client_id,
        pool_id,
        sorted(visitor_ids),
    )
    return {row["visitor_id"]: SessionRecord(**row) for row in rows}


async def get(db: Executor, session_id: UUID) -> SessionRecord | None:
    row = await db.fetchrow(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1", session_id)
    return SessionRecord(**row) if row else None


async def insert_form(
    db: Executor,
    *,
    form_id: UUID,
    session: SessionRecord,
    form: str,
    fields: dict[str, str],
    page: str | None,
    at: datetime,
) -> None:
    await db.execute(
        """INSERT INTO forms (id, client_id, session_id, form, fields, attribution, page,
                              submitted_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        form_id,
        session.client_id,
        session.id,
        form,
        fields,
        session.attribution,
        page,
        at,
    )


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """What GET /v1/sessions narrows by; None: no condition."""

    pool_id: UUID | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    source: str | None = None
    campaign: str | None = None
    has_call: bool | None = None


async def list_page(
    db: Executor, scope: UUID | None, after: UUID | None, limit: int, where: SessionFilter
) -> list[SessionRecord]:
    """Sessions in id order after the cursor, within ``scope``, narrowed by ``where``."""
    rows = await db.fetch(
        f"""SELECT {SESSION_COLUMNS} FROM sessions s
            WHERE ($1::uuid IS NULL OR client_id = $1)
              AND ($2::uuid IS NULL OR id > $2)
              AND ($4::uuid IS NULL OR pool_id = $4)
              AND ($5::timestamptz IS NULL OR created_at >= $5)
              AND ($6::timestamptz IS NULL OR created_at < $6)
              AND ($7::text IS NULL OR attribution->>'source' = $7)
              AND ($8::text IS NULL OR attribution->>'campaign' = $8)
              AND ($9::boolean IS NULL OR EXISTS (
                    SELECT 1 FROM calls c
                    WHERE c.client_id = s.client_id AND c.session_id = s.id) = $9)
            ORDER BY id LIMIT $3""",
        scope,
        after,
        limit,
        where.pool_id,
        where.created_from,
        where.created_before,
        where.source,
        where.campaign,
        where.has_call,
    )
    return [SessionRecord(**row) for row in rows]


async def get_scoped(db: Executor, session_id: UUID, scope: UUID | None) -> SessionRecord | None:
    """One session, if it is ``scope``'s (any client's for the operator)."""
    row = await db.fetchrow(
        f"""SELECT {SESSION_COLUMNS} FROM sessions
            WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)""",
        session_id,
        scope,
    )
    return SessionRecord(**row) if row else None


async def of_ids(
    db: Executor, scope: UUID | None, session_ids: list[UUID]
) -> dict[UUID, SessionRecord]:
    """The sessions with these ids within ``scope`` (a page of calls' visits)."""
    if not session_ids:
        return {}
    rows = await db.fetch(
        f"""SELECT {SESSION_COLUMNS} FROM sessions
            WHERE id = ANY($1::uuid[]) AND ($2::uuid IS NULL OR client_id = $2)""",
        session_ids,
        scope,
    )
    return {row["id"]: SessionRecord(**row) for row in rows}


async def call_ids(db: Executor, session: SessionRecord) -> list[UUID]:
    """The calls credited to a session, oldest first."""
    rows = await db.fetch(
        "SELECT id FROM calls WHERE client_id = $1 AND session_id = $2 ORDER BY started_at, id",
        session.client_id,
        session.id,
    )
    return [row["id"] for row in rows]


@dataclass(frozen=True, slots=True)
class Form:
    """A form submission as stored, with the attribution of its session at the time."""

    id: UUID
    client_id: UUID
    session_id: UUID
    form: str
    fields: dict[str, str]
    attribution: dict[str, Any]
    page: str | None
    submitted_at: datetime


async def forms_page(
    db: Executor,
    scope: UUID | None,
    after: UUID | None,
    limit: int,
    *,
    session_id: UUID | None = None,
    submitted_from: datetime | None = None,
    submitted_before: datetime | None = None,
) -> list[Form]:
    """Form submissions in id order after the cursor, within ``scope``."""
    rows = await db.fetch(
        f"""SELECT {FORM_COLUMNS} FROM forms
            WHERE ($1::uuid IS NULL OR client_id = $1)
              AND ($2::uuid IS NULL OR id > $2)
              AND ($4::uuid IS NULL OR session_id = $4)
              AND ($5::timestamptz IS NULL OR submitted_at >= $5)
              AND ($6::timestamptz IS NULL OR submitted_at < $6)
            ORDER BY id LIMIT $3""",
        scope,
        after,
        limit,
        session_id,
        submitted_from,
        submitted_before,
    )
    return [Form(**row) for row in rows]


async def get_form(db: Executor, form_id: UUID, scope: UUID | None) -> Form | None:
    row = await db.fetchrow(
        f"SELECT {FORM_COLUMNS} FROM forms WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        form_id,
        scope,
    )
    return Form(**row) if row else None
