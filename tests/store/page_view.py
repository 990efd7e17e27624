"""A new visit written as the swap script's page view writes it, for the lease tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from callrouter.store import leases
from callrouter.store import sessions as session_store
from callrouter.store.sessions import SessionRecord


async def new_visit(
    db: asyncpg.Connection[asyncpg.Record],
    *,
    client_id: UUID,
    pool_id: UUID,
    session_id: UUID,
    visitor_id: str | None,
    now: float,
    hold: float,
    grace: float,
    policy: str,
    attribution: dict[str, Any],
) -> leases.Taken | None:
    """Its lease (if the pool gives one), then its session's row, in the caller's transaction
    (a live lease is taken from a session only with its row)."""
    taken = await leases.take(
        db,
        pool_id=pool_id,
        session_id=session_id,
        visitor_id=visitor_id,
        now=now,
        hold=hold,
        grace=grace,
        policy=policy,
    )
    seen = datetime.fromtimestamp(now, UTC)
    await session_store.save(
        db,
        SessionRecord(
            id=session_id,
            client_id=client_id,
            pool_id=pool_id,
            visitor_id=visitor_id,
            number=taken.row.number if taken else None,
            attribution=attribution,
            user_agent=None,
            ip_network=None,
            created_at=seen,
            last_seen_at=seen,
            lease_expires_at=taken.row.expires_at if taken else None,
            ended=False,
        ),
    )
    return taken
