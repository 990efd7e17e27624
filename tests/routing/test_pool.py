"""The pool's leases in PostgreSQL (exclusivity, reuse order, expiry and grace with a fake
clock) and a node's index of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID, uuid4

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.routing.pool import Lease, NumberPool
from callrouter.store import leases
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.numbers import NUMBERS
from callrouter.store.pools import POOLS, new_public_key
from tests.store.page_view import new_visit

NUMBERS_OF_POOL = [f"+4415155500{i:02d}" for i in range(3)]
T0 = 1_795_600_000.0
HOLD, GRACE = 60.0, 300.0


@dataclass
class Pool:
    db: asyncpg.Pool[asyncpg.Record]
    client_id: UUID
    pool_id: UUID
    policy: str

    async def take(self, session_id: UUID, at: float) -> leases.Taken | None:
        """A new visit's lease and its session's row, in one transaction as a page view
        writes them (a live lease is taken from a session only with its row)."""
        async with self.db.acquire() as db, db.transaction():
            return await new_visit(
                db,
                client_id=self.client_id,
                pool_id=self.pool_id,
                session_id=session_id,
                visitor_id=None,
                now=T0 + at,
                hold=HOLD,
                grace=GRACE,
                policy=self.policy,
                attribution={},
            )

    async def renew(
        self, taken: leases.Taken | None, at: float, *, ended: bool = False
    ) -> leases.LeaseRow | None:
        assert taken is not None
        return await leases.renew(
            self.db,
            client_id=self.client_id,
            session_id=taken.row.session_id or uuid4(),
            number=taken.row.number,
            now=T0 + at,
            hold=HOLD,
            ended=ended,
        )


async def make_pool(dsn: str, policy: str) -> Pool:
    db = await create_pool(dsn, min_size=1, max_size=4)
    client = await CLIENTS.insert(db, {}, {"name": "Acme"})
    pool = await POOLS.insert(
        db,
        {"client_id": client.id, "public_key": new_public_key()},
        {"name": "website", "exhaustion_policy": policy},
    )
    for e164 in NUMBERS_OF_POOL:
        await NUMBERS.insert(db, {"client_id": client.id, "e164": e164}, {"pool_id": pool.id})
    return Pool(db, client.id, pool.id, policy)


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[Pool]:
    p = await make_pool(database_dsn, "reuse_oldest")
    yield p
    await p.db.close()


@pytest.fixture
async def strict_pool(database_dsn: str) -> AsyncIterator[Pool]:
    p = await make_pool(database_dsn, "default_number")
    yield p
    await p.db.close()


async def test_every_pool_number_has_one_lease_row_that_follows_membership(pool: Pool) -> None:
    rows = await leases.of_pool(pool.db, pool.pool_id)
    assert [r.number for r in rows] == NUMBERS_OF_POOL
    assert all(r.session_id is None and r.version == 0 for r in rows)
    await pool.db.execute("UPDATE numbers SET pool_id = NULL WHERE e164 = $1", NUMBERS_OF_POOL[0])
    assert [r.number for r in await leases.of_pool(pool.db, pool.pool_id)] == NUMBERS_OF_POOL[1:]


async def test_released_numbers_are_reused_longest_released_first_out_of_grace_first(
    pool: Pool,
) -> None:
    taken = [await pool.take(uuid4(), float(i)) for i in range(3)]
    assert [t.row.number for t in taken if t] == NUMBERS_OF_POOL
    await pool.renew(taken[1], 10.0, ended=True)  # released at 70
    await pool.renew(taken[0], 20.0, ended=True)  # released at 80
    await pool.renew(taken[2], 30.0, ended=True)  # released at 90
    # At 385 the first two are out of grace (370, 380 < 385); the oldest release wins.
    order = [await pool.take(uuid4(), 385.0) for _ in range(2)]
    assert [t.row.number for t in order if t and not t.exhausted] == NUMBERS_OF_POOL[1::-1]


async def test_heartbeats_keep_a_lease_and_its_hold_outlives_the_page(pool: Pool) -> None:
    taken = await pool.take(uuid4(), 0.0)
    assert taken is not None and (await pool.renew(taken, 50.0)) is not None
    closed = await pool.renew(taken, 100.0, ended=True)
    assert closed is not None and closed.expires_at is not None
    assert closed.expires_at.timestamp() == T0 + 160.0  # the hold runs from the page close
    assert await pool.renew(taken, 161.0) is None  # expired at 160: renewing is too late


async def test_reuse_oldest_takes_the_number_released_longest_ago_even_in_its_grace(
    pool: Pool,
) -> None:
    taken = [await pool.take(uuid4(), 0.0) for _ in range(3)]
    await pool.renew(taken[1], 50.0)  # lives until 110
    await pool.renew(taken[2], 0.0, ended=True)  # released at 60
    await pool.renew(taken[0], 5.0, ended=True)  # released at 65
    got = [await pool.take(uuid4(), 70.0) for _ in range(2)]
    assert [t.row.number for t in got if t] == [NUMBERS_OF_POOL[2], NUMBERS_OF_POOL[0]]
    assert all(t is not None and t.exhausted and t.revoked is None for t in got)


async def test_reuse_oldest_with_nothing_released_takes_the_lease_idle_longest(
    pool: Pool,
) -> None:
    taken = [await pool.take(uuid4(), float(i)) for i in range(3)]
    await pool.renew(taken[0], 20.0)  # session 1 (leased at 1) is now the one idle longest
    await pool.renew(taken[2], 21.0)
    newcomer = uuid4()
    got = await pool.take(newcomer, 30.0)
    assert got is not None and taken[1] is not None
    assert got.row.number == taken[1].row.number and got.exhausted
    assert got.revoked == taken[1].row.session_id  # the idle page lost its number...
    stored = await pool.db.fetchval(
        "SELECT lease_expires_at FROM sessions WHERE id = $1", got.revoked
    )
    assert stored.timestamp() == T0 + 30.0  # ...its stored lease ended then...
    assert await pool.renew(taken[1], 31.0) is None  # ...and it cannot renew it
    assert got.row.session_id == newcomer  # calls to it now reach the newcomer


async def test_default_number_policy_gives_no_lease_when_exhausted(strict_pool: Pool) -> None:
    taken = [await strict_pool.take(uuid4(), 0.0) for _ in range(3)]
    await strict_pool.renew(taken[0], 5.0, ended=True)  # released at 65, in grace at 70
    assert await strict_pool.take(uuid4(), 70.0) is None
    assert await strict_pool.renew(taken[1], 50.0) is not None  # nobody's lease is taken


def test_the_index_keeps_the_newest_version_of_each_row_whatever_order_they_arrive() -> None:
    index = NumberPool(list(NUMBERS_OF_POOL), hold=HOLD, grace=GRACE)
    first, second = uuid4(), uuid4()
    number = NUMBERS_OF_POOL[0]
    newer = Lease(number, second, None, 100.0, 100.0, 160.0, version=2)
    older = Lease(number, first, None, 0.0, 0.0, 60.0, version=1)
    assert index.apply(number, newer, 2, 100.0)
    assert not index.apply(number, older, 1, 100.0)  # a late NOTIFY of an older state
    assert index.holder(number, 101.0) is newer and index.session(first, 101.0) is None
    assert index.holder(number, 461.0) is None  # past its hold and grace
    assert not index.apply("+441515559999", older, 9, 0.0)  # not this pool's number
    assert index.apply(number, None, 3, 200.0)  # freed (an erasure)
    assert index.holder(number, 200.0) is None and index.session(second, 150.0) is None
    stats = index.stats(100.0)
    assert (stats.size, stats.leased, stats.peak) == (3, 0, 1)


def test_heartbeats_keep_a_lease_counted_without_growing_the_index() -> None:
    index = NumberPool(list(NUMBERS_OF_POOL), hold=HOLD, grace=GRACE)
    number, session = NUMBERS_OF_POOL[0], uuid4()
    assert index.apply(number, Lease(number, session, None, 0.0, 0.0, 60.0), 1, 0.0)
    for beat in range(1, 1001):
        now = beat * 0.5
        assert index.extend(session, now, now + HOLD, ended=False) is not None
        assert index.leased(now) == 1
    # One look pending for the number, not one per heartbeat within a hold (120 here before).
    assert len(index._expiry) == 1
    assert index.leased(500.0 + HOLD - 0.1) == 1
    assert index.leased(500.0 + HOLD) == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["apply", "free", "extend", "forget", "look"]),
            st.integers(0, 2),
            st.floats(0.0, 30.0),
            st.floats(0.1, 120.0),
        ),
        max_size=60,
    )
)
def test_the_index_counts_what_its_holders_say_whatever_the_order_of_changes(
    steps: list[tuple[str, int, float, float]],
) -> None:
    """``leased`` against a plain count of the holders live now, over rows, frees, renewals,
    erasures and looks in time order."""
    index = NumberPool(list(NUMBERS_OF_POOL), hold=HOLD, grace=GRACE)
    sessions = [uuid4() for _ in NUMBERS_OF_POOL]
    holders: dict[str, Lease] = {}
    now, version = 0.0, 0
    for action, which, step, length in steps:
        now += step
        number, version = NUMBERS_OF_POOL[which], version + 1
        if action == "apply":
            sessions[which] = uuid4()
            lease = Lease(number, sessions[which], None, now, now, now + length)
            index.apply(number, lease, version, now)
            holders[number] = lease
        elif action == "free":
            index.apply(number, None, version, now)
            holders.pop(number, None)
        elif action == "extend":
            index.extend(sessions[which], now, now + length, ended=False)
        elif action == "forget":
            index.forget(sessions[which])
            if number in holders and holders[number].session_id == sessions[which]:
                del holders[number]
        live = sum(1 for lease in holders.values() if lease.expires_at > now)
        assert index.leased(now) == live
