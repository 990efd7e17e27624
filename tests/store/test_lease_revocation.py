"""A live lease is taken under ``reuse_oldest`` only together with its session's row, so the
session's stored lease ends with it; a visit whose row another transaction holds is being
served and keeps its number. Two real connections, interleaved by hand: one holds the row as
a page view does, the other takes the pool's one number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import asyncpg
import pytest

from callrouter.store import leases
from callrouter.store import sessions as session_store
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.ids import new_id
from callrouter.store.numbers import NUMBERS
from callrouter.store.pools import POOLS, new_public_key
from tests.store.page_view import new_visit

NUMBER = "+441515550100"
T0 = 1_795_600_000.0
HOLD, GRACE = 60.0, 120.0
T = TypeVar("T")


@dataclass
class OneNumberPool:
    db: asyncpg.Pool[asyncpg.Record]
    client_id: UUID
    pool_id: UUID

    async def visit(
        self, db: asyncpg.Connection[asyncpg.Record], visitor: str, at: float
    ) -> tuple[UUID, leases.Taken | None]:
        """A new visit as a page view writes it: its lease (if the pool gives one), then its
        row, in the caller's transaction."""
        session_id = new_id()
        taken = await new_visit(
            db,
            client_id=self.client_id,
            pool_id=self.pool_id,
            session_id=session_id,
            visitor_id=visitor,
            now=T0 + at,
            hold=HOLD,
            grace=GRACE,
            policy="reuse_oldest",
            attribution={"source": "google"},
        )
        return session_id, taken

    async def live_sessions(self, at: float) -> list[UUID]:
        """The sessions whose stored row says they hold the number at ``at``."""
        rows = await self.db.fetch(
            "SELECT id FROM sessions WHERE number = $1 AND lease_expires_at > $2 ORDER BY id",
            NUMBER,
            datetime.fromtimestamp(T0 + at, UTC),
        )
        return [row["id"] for row in rows]

    async def holder(self) -> UUID | None:
        row = await leases.of_number(self.db, NUMBER)
        assert row is not None
        return row.session_id


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[OneNumberPool]:
    db = await create_pool(database_dsn, min_size=2, max_size=4)
    client = await CLIENTS.insert(db, {}, {"name": "Acme"})
    created = await POOLS.insert(
        db,
        {"client_id": client.id, "public_key": new_public_key()},
        {
            "name": "website",
            "lease_hold_seconds": int(HOLD),
            "grace_seconds": int(GRACE),
            "exhaustion_policy": "reuse_oldest",
        },
    )
    await NUMBERS.insert(db, {"client_id": client.id, "e164": NUMBER}, {"pool_id": created.id})
    yield OneNumberPool(db, client.id, created.id)
    await db.close()


async def waiting_for_a_lock(db: asyncpg.Pool[asyncpg.Record], pid: int) -> bool:
    return bool(
        await db.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
    )


async def finished_or_waiting(
    db: asyncpg.Pool[asyncpg.Record], work: asyncio.Future[T], pid: int
) -> bool:
    """Until ``work`` is done or its connection waits for a lock (bounded): whether it
    finished."""
    deadline = asyncio.get_running_loop().time() + 10
    while not work.done() and not await waiting_for_a_lock(db, pid):
        assert asyncio.get_running_loop().time() < deadline, "neither finished nor waiting"
        await asyncio.sleep(0.01)
    return work.done()


async def test_a_live_lease_whose_visit_is_being_served_is_not_taken_and_later_is_whole(
    pool: OneNumberPool,
) -> None:
    """The pool's one number is held by visitor-7's live session. A page view of visitor-7 on
    another node has read and locked that session's row (as a group commit does, to decide
    the visit continues) and writes nothing. A new visit meanwhile neither waits for it nor
    takes the number (taking it would leave the row saying it still holds the number: two
    live sessions on one number). Once the page view is done, the next new visit takes the
    number, and only its row says it holds it."""
    async with pool.db.acquire() as holder, pool.db.acquire() as taker:
        async with taker.transaction():
            loser, _ = await pool.visit(taker, "visitor-7", 0.0)

        async def new_visit(at: float) -> tuple[UUID, leases.Taken | None]:
            async with taker.transaction():
                return await pool.visit(taker, "visitor-0", at)

        async with holder.transaction():
            held = await session_store.latest_of_visitors(
                holder, pool.client_id, pool.pool_id, ["visitor-7"]
            )
            assert held["visitor-7"].id == loser
            taking = asyncio.ensure_future(new_visit(30.0))
            assert await finished_or_waiting(pool.db, taking, taker.get_server_pid())
            _, taken = await taking
            assert await pool.live_sessions(30.0) == [await pool.holder()]
            assert taken is None and await pool.holder() == loser

        winner, taken = await new_visit(31.0)
    assert taken is not None and taken.revoked == loser
    assert await pool.holder() == winner
    assert await pool.live_sessions(31.0) == [winner]


async def test_the_visits_own_page_view_keeps_its_number_and_nothing_deadlocks(
    pool: OneNumberPool,
) -> None:
    """The page view holding the row is visitor-7's own: it goes on to renew its number
    while the new visit's transaction, which passed the number over, still holds that
    number's row. The page view waits for it, not the other way round too (no deadlock for
    PostgreSQL to undo), and renews its lease once the new visit commits."""
    async with pool.db.acquire() as viewer, pool.db.acquire() as taker:
        async with taker.transaction():
            loser, _ = await pool.visit(taker, "visitor-7", 0.0)

        async with viewer.transaction():
            await session_store.latest_of_visitor(viewer, pool.client_id, pool.pool_id, "visitor-7")
            new_visit = taker.transaction()
            await new_visit.start()
            _, taken = await pool.visit(taker, "visitor-0", 30.0)
            assert taken is None
            renewing = asyncio.ensure_future(
                leases.renew(
                    viewer,
                    client_id=pool.client_id,
                    session_id=loser,
                    number=NUMBER,
                    now=T0 + 30.0,
                    hold=HOLD,
                )
            )
            assert not await finished_or_waiting(pool.db, renewing, viewer.get_server_pid())
            await new_visit.commit()
            renewed = await renewing

    assert renewed is not None and renewed.session_id == loser
    assert await pool.live_sessions(30.0 + HOLD - 1) == [loser]
