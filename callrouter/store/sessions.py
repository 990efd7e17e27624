"""Visitor sessions and form submissions, written behind the in-memory pool."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor

_COLUMNS = (
    "id, client_id, pool_id, visitor_id, number, attribution, user_agent, ip_network, "
    "created_at, last_seen_at, lease_expires_at, ended"
)


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


async def save_many(db: Executor, records: list[SessionRecord]) -> None:
    """Insert new sessions and update the lease facts of known ones, in one round trip."""
    if not records:
        return
    await db.executemany(
        f"""INSERT INTO sessions ({_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (id) DO UPDATE SET
                number = EXCLUDED.number,
                visitor_id = EXCLUDED.visitor_id,
                last_seen_at = EXCLUDED.last_seen_at,
                lease_expires_at = EXCLUDED.lease_expires_at,
                ended = EXCLUDED.ended""",
        [
            (
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
            )
            for r in records
        ],
    )


async def recent(db: Executor, since: datetime) -> list[SessionRecord]:
    """Sessions whose lease lived at ``since`` or later (live ones and those still in grace)."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM sessions
            WHERE number IS NOT NULL AND lease_expires_at >= $1 ORDER BY last_seen_at""",
        since,
    )
    return [SessionRecord(**row) for row in rows]


async def get(db: Executor, session_id: UUID) -> SessionRecord | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM sessions WHERE id = $1", session_id)
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
