"""Forgetting erased visits: out of memory, their numbers free at once, never written back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import pytest

from callrouter.routing.sessions import Sessions
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.numbers import NUMBERS
from callrouter.store.pools import POOLS, new_public_key

PAGE = "https://www.acme.example/?utm_source=google&utm_medium=cpc"
NUMBER = "+441515550100"


@dataclass
class Clock:
    now: float = 1_795_600_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    db: asyncpg.Pool[asyncpg.Record]
    sessions: Sessions
    clock: Clock
    pool_id: UUID

    def visit(self, visitor: str) -> UUID:
        live = self.sessions.pools[self.pool_id]
        visit, _shown = self.sessions.start(
            live, visitor_id=visitor, page_url=PAGE, referrer=None, user_agent=None, ip=None
        )
        return visit.record.id

    async def stored(self, session_id: UUID) -> int:
        count: int = await self.db.fetchval(
            "SELECT count(*) FROM sessions WHERE id = $1", session_id
        )
        return count


@pytest.fixture
async def site(database_dsn: str) -> AsyncIterator[Site]:
    """One pool with one number, under ``default_number``: a number still in its grace is not
    leased again, so a second visit gets it only if it is truly free."""
    db = await create_pool(database_dsn, min_size=1, max_size=4)
    client = await CLIENTS.insert(db, {}, {"name": "Acme"})
    pool = await POOLS.insert(
        db,
        {"client_id": client.id, "public_key": new_public_key()},
        {
            "name": "website",
            "lease_hold_seconds": 60,
            "grace_seconds": 300,
            "exhaustion_policy": "default_number",
        },
    )
    await NUMBERS.insert(db, {"client_id": client.id, "e164": NUMBER}, {"pool_id": pool.id})
    clock = Clock()
    sessions = Sessions(db, clock)
    await sessions.reload(pool.id, quiet=True)
    try:
        yield Site(db, sessions, clock, pool.id)
    finally:
        await db.close()


async def test_a_forgotten_visit_attributes_nothing_and_frees_its_number(site: Site) -> None:
    session_id = site.visit("visitor-1")
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id == session_id

    site.sessions.forget([session_id])

    assert site.sessions.visit(session_id) is None
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id is None  # the pool's default
    assert site.sessions.heartbeat(session_id) is None
    # Free at once, not after the grace period, and not given back to the erased visitor id.
    live = site.sessions.pools[site.pool_id]
    lease = live.numbers.lease(UUID(int=1), "visitor-1", site.clock())
    assert lease is not None and lease.number == NUMBER and lease.session_id == UUID(int=1)


async def test_a_visit_in_its_grace_period_is_forgotten_too(site: Site) -> None:
    session_id = site.visit("visitor-1")
    site.sessions.end(session_id)
    site.clock.now += 90  # the hold is over; the grace (300 s) is not
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id == session_id

    site.sessions.forget([session_id])

    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id is None
    other = site.visit("visitor-2")  # under default_number: only a number out of grace
    assert site.sessions.pools[site.pool_id].numbers.session(other, site.clock()) is not None


async def test_an_unwritten_visit_is_never_written(site: Site) -> None:
    session_id = site.visit("visitor-1")
    site.sessions.forget([session_id])
    assert await site.sessions.flush() == 0
    assert await site.stored(session_id) == 0


async def test_a_write_in_flight_during_the_erasure_does_not_bring_the_session_back(
    site: Site, database_dsn: str
) -> None:
    """The erasure's order: find the rows, forget, delete, commit, forget again. A batch sent
    before it commits waits on its row lock, then inserts the row anew once the delete has
    committed; the flush deletes it again."""
    session_id = site.visit("visitor-1")
    assert await site.sessions.flush() == 1
    site.clock.now += 10
    assert site.sessions.heartbeat(session_id) is not None  # a change to write behind

    eraser = await asyncpg.connect(database_dsn)
    try:
        erasure = eraser.transaction()
        await erasure.start()
        await eraser.execute("DELETE FROM sessions WHERE id = $1", session_id)
        flush = asyncio.create_task(site.sessions.flush())
        await wait_for_a_lock_wait(site.db)
        site.sessions.forget([session_id])
        await erasure.commit()
        site.sessions.forget([session_id])
        assert await flush == 1
    finally:
        await eraser.close()

    assert await site.stored(session_id) == 0
    assert await site.sessions.flush() == 0
    assert await site.stored(session_id) == 0


async def test_a_failed_write_keeps_only_what_was_not_forgotten(site: Site) -> None:
    kept, erased = site.visit("visitor-1"), site.visit("visitor-2")
    await site.db.execute("ALTER TABLE sessions ADD CONSTRAINT fail_all CHECK (false) NOT VALID")
    flush = asyncio.create_task(site.sessions.flush())
    await asyncio.sleep(0)  # the batch is taken and sent
    site.sessions.forget([erased])
    with pytest.raises(asyncpg.CheckViolationError):
        await flush
    await site.db.execute("ALTER TABLE sessions DROP CONSTRAINT fail_all")
    assert await site.sessions.flush() == 1
    assert (await site.stored(kept), await site.stored(erased)) == (1, 0)


async def wait_for_a_lock_wait(db: asyncpg.Pool[asyncpg.Record]) -> None:
    """Until a statement of this database waits on a row lock (the flush's upsert)."""
    for _ in range(500):
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the flush never reached the database")


async def test_visit_ids_are_time_ordered(site: Site) -> None:
    """Session ids are UUIDv7 like every row id, so a later visit sorts after an earlier one."""
    first, second = site.visit("visitor-1"), site.visit("visitor-2")
    assert (first.version, second.version) == (7, 7)
    assert first < second
