"""Forgetting erased visits: out of memory, their numbers free at once, on every node."""

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
from callrouter.store.leases import LEASE_CHANNEL, SESSION_CHANNEL
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
    dsn: str

    async def visit(self, visitor: str) -> UUID:
        live = self.sessions.pools[self.pool_id]
        visit, _shown = await self.sessions.start(
            live, visitor_id=visitor, page_url=PAGE, referrer=None, user_agent=None, ip=None
        )
        return visit.record.id

    async def erase(self, session_id: UUID) -> None:
        """What an erasure does: delete the row, then forget the visit."""
        await self.db.execute("DELETE FROM sessions WHERE id = $1", session_id)
        self.sessions.forget([session_id])


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
        yield Site(db, sessions, clock, pool.id, database_dsn)
    finally:
        await db.close()


async def test_a_forgotten_visit_attributes_nothing_and_frees_its_number(site: Site) -> None:
    session_id = await site.visit("visitor-1")
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id == session_id

    await site.erase(session_id)

    assert await site.sessions.visit(session_id) is None
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id is None  # the pool's default
    assert await site.sessions.heartbeat(session_id) is None
    # Free at once, not after the grace period, and not given back as the erased visit's.
    other = await site.visit("visitor-1")
    assert other != session_id
    assert site.sessions.pools[site.pool_id].numbers.session(other, site.clock()) is not None


async def test_a_visit_in_its_grace_period_is_forgotten_too(site: Site) -> None:
    session_id = await site.visit("visitor-1")
    await site.sessions.end(session_id)
    site.clock.now += 90  # the hold is over; the grace (300 s) is not
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id == session_id

    await site.erase(session_id)

    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id is None
    other = await site.visit("visitor-2")  # under default_number: only a number out of grace
    assert site.sessions.pools[site.pool_id].numbers.session(other, site.clock()) is not None


async def test_another_nodes_erasure_reaches_this_nodes_memory(site: Site) -> None:
    """The row's deletion frees the number in the database; its NOTIFYs clear this node."""
    session_id = await site.visit("visitor-1")
    seen: list[str] = []
    listener = await asyncpg.connect(site.dsn)
    try:
        for channel, callback in (
            (LEASE_CHANNEL, site.sessions.on_lease),
            (SESSION_CHANNEL, site.sessions.on_session),
        ):
            await listener.add_listener(channel, callback)
            await listener.add_listener(channel, lambda *args: seen.append(args[2]))
        await site.db.execute("DELETE FROM sessions WHERE id = $1", session_id)
        for _ in range(500):
            if {LEASE_CHANNEL, SESSION_CHANNEL} <= set(seen):
                break
            await asyncio.sleep(0.01)
    finally:
        await listener.close()
    attribution = site.sessions.attribute(NUMBER)
    assert attribution is not None and attribution.session_id is None
    assert site.sessions.live == 0


async def test_visit_ids_are_time_ordered(site: Site) -> None:
    """Session ids are UUIDv7 like every row id, so a later visit sorts after an earlier one."""
    first, second = await site.visit("visitor-1"), await site.visit("visitor-2")
    assert (first.version, second.version) == (7, 7)
    assert first < second
