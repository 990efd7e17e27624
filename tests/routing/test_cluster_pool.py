"""Several nodes on one PostgreSQL: each is a ``Sessions`` with its own connection pool and its
own LISTEN connection, as ``callrouter serve`` builds it. Their requests race for real in the
database; a shared fake clock stands for the nodes' synchronised clocks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest

from callrouter.routing.sessions import Sessions
from callrouter.store import leases
from callrouter.store.availability import OUTAGE_ERRORS
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.notifications import Notifications
from callrouter.store.numbers import NUMBERS
from callrouter.store.pools import POOLS, new_public_key
from callrouter.supervisor import Supervisor
from tests.database_link import CuttableLink
from tests.waiting import until

PAGE = "https://www.acme.example/?utm_source=google&utm_medium=cpc"
POOL_NUMBERS = [f"+4415155501{i:02d}" for i in range(4)]
HOLD, GRACE = 60, 120


@dataclass
class Clock:
    now: float = 1_795_600_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    db: asyncpg.Pool[asyncpg.Record]
    dsn: str
    clock: Clock
    pool_id: UUID
    stack: AsyncExitStack
    nodes: list[Sessions] = field(default_factory=list)
    listeners: list[Notifications] = field(default_factory=list)

    async def add_node(self, backoff: Callable[[int], float] = lambda n: 0.1) -> Sessions:
        """A node as serve wires it: LISTEN first, then read everything."""
        db = await create_pool(self.dsn, min_size=1, max_size=4)
        self.stack.push_async_callback(db.close)
        node = Sessions(db, self.clock, announce=lambda _line: None)
        listener = Notifications(self.dsn, backoff=backoff)
        await listener.connect()
        self.stack.push_async_callback(listener.close)
        jobs = Supervisor()
        jobs.start("notifications", lambda: listener.run(lambda _line: None))
        self.stack.push_async_callback(jobs.stop)
        await listener.add_listener(leases.LEASE_CHANNEL, node.on_lease)
        await listener.add_listener(leases.SESSION_CHANNEL, node.on_session)
        listener.on_lost(node.untrust)
        listener.on_listening(node.resync)
        await node.load()
        self.nodes.append(node)
        self.listeners.append(listener)
        return node

    async def visit(self, node: Sessions, visitor: str) -> UUID:
        visit, _shown = await node.start(
            node.pools[self.pool_id],
            visitor_id=visitor,
            page_url=PAGE,
            referrer=None,
            user_agent=None,
            ip=None,
        )
        return visit.record.id

    async def truth(self) -> dict[str, UUID | None]:
        """Whom PostgreSQL says a call to each number belongs to now (live lease or grace)."""
        now = self.clock()
        return {
            row.number: row.session_id
            if row.expires_at is not None and now - row.expires_at.timestamp() <= GRACE
            else None
            for row in await leases.of_pool(self.db, self.pool_id)
        }

    def index(self, node: Sessions) -> dict[str, UUID | None]:
        numbers = node.pools[self.pool_id].numbers
        return {
            n: lease.session_id if (lease := numbers.holder(n, self.clock())) else None
            for n in POOL_NUMBERS
        }


async def make_cluster(
    dsn: str, stack: AsyncExitStack, policy: str, grace: int = GRACE, numbers: int = 4
) -> Cluster:
    db = await create_pool(dsn, min_size=1, max_size=4)
    stack.push_async_callback(db.close)
    client = await CLIENTS.insert(db, {}, {"name": "Acme"})
    pool = await POOLS.insert(
        db,
        {"client_id": client.id, "public_key": new_public_key()},
        {
            "name": "website",
            "lease_hold_seconds": HOLD,
            "grace_seconds": grace,
            "exhaustion_policy": policy,
        },
    )
    for e164 in POOL_NUMBERS[:numbers]:
        await NUMBERS.insert(db, {"client_id": client.id, "e164": e164}, {"pool_id": pool.id})
    return Cluster(db, dsn, Clock(), pool.id, stack)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def lease_statements(db: asyncpg.Pool[asyncpg.Record]) -> Callable[[], Awaitable[int]]:
    """PostgreSQL counts the statements that change lease rows from now on (a statement-level
    trigger fires once per UPDATE, whatever the rows it changed, none included)."""
    await db.execute(
        """CREATE TABLE lease_statements (at timestamptz NOT NULL DEFAULT clock_timestamp());
           CREATE FUNCTION count_lease_statement() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO lease_statements DEFAULT VALUES; RETURN NULL; END $$;
           CREATE TRIGGER lease_statement AFTER UPDATE ON number_leases
               FOR EACH STATEMENT EXECUTE FUNCTION count_lease_statement();"""
    )

    async def count() -> int:
        counted: int = await db.fetchval("SELECT count(*) FROM lease_statements")
        return counted

    return count


async def test_concurrent_new_visits_on_one_node_take_their_leases_in_fewer_statements(
    database_dsn: str, stack: AsyncExitStack
) -> None:
    """Four new visits at once on one node: four different numbers, each written with its
    session, taken by fewer UPDATE statements than visits (the group commit)."""
    cluster = await make_cluster(database_dsn, stack, "default_number")
    node = await cluster.add_node()
    statements = await lease_statements(cluster.db)
    visits = len(POOL_NUMBERS)
    ids = await asyncio.gather(*(cluster.visit(node, f"visitor-{i}") for i in range(visits)))
    truth = await cluster.truth()
    assert sorted(truth.values(), key=str) == sorted(ids, key=str)  # one number each
    stored = await cluster.db.fetch("SELECT id, number FROM sessions")
    assert {row["id"]: row["number"] for row in stored} == {s: n for n, s in truth.items()}
    assert await statements() < visits


@pytest.mark.parametrize("policy", ["default_number", "reuse_oldest"])
async def test_exhaustion_within_one_batch_is_answered_per_visit(
    database_dsn: str, stack: AsyncExitStack, policy: str
) -> None:
    """Seven new visits at once for four numbers. Under default_number four get a number and
    three none, each counted as an exhaustion, in fewer statements than visits; under
    reuse_oldest every visit gets one, the last three each taken from the visit idle
    longest, as visits one after the other would. Never one number for two live sessions."""
    cluster = await make_cluster(database_dsn, stack, policy)
    node = await cluster.add_node()
    statements = await lease_statements(cluster.db)
    live = node.pools[cluster.pool_id]
    answers = await asyncio.gather(
        *(
            node.start(
                live, visitor_id=f"v{i}", page_url=PAGE, referrer=None, user_agent=None, ip=None
            )
            for i in range(7)
        )
    )
    shown = [number for _visit, number in answers]
    numbered = [number for number in shown if number is not None]
    stats = node.stats(cluster.pool_id)
    assert stats is not None
    truth = await cluster.truth()
    if policy == "default_number":
        assert sorted(numbered) == POOL_NUMBERS and stats.exhaustions == 3
        assert await statements() < 7
        assert set(truth.values()) == {visit.record.id for visit, n in answers if n is not None}
    else:
        assert None not in shown and stats.exhaustions == 3
        assert len(set(truth.values())) == len(POOL_NUMBERS)
    now = datetime.fromtimestamp(cluster.clock(), UTC)
    doubled = await cluster.db.fetch(
        """SELECT number FROM sessions WHERE number IS NOT NULL AND lease_expires_at > $1
           GROUP BY number HAVING count(*) > 1""",
        now,
    )
    assert doubled == []


@pytest.mark.parametrize(("policy", "seed"), [("reuse_oldest", 1), ("default_number", 2)])
async def test_nodes_racing_never_give_one_number_to_two_live_sessions(
    database_dsn: str, stack: AsyncExitStack, policy: str, seed: int
) -> None:
    """Three nodes, page views, heartbeats and page closes of eight visitors sent to random
    nodes at once, the clock moving between rounds: after each round no number has two live
    sessions, every node's index agrees with PostgreSQL, and each node attributes a call to
    any number as PostgreSQL says."""
    cluster = await make_cluster(database_dsn, stack, policy)
    nodes = [await cluster.add_node() for _ in range(3)]
    rng = random.Random(seed)
    sessions: list[UUID] = []

    async def act() -> None:
        node = rng.choice(nodes)
        action = rng.choice(["view", "view", "heartbeat", "end"])
        if action == "view" or not sessions:
            sessions.append(await cluster.visit(node, f"visitor-{rng.randrange(8)}"))
        elif action == "heartbeat":
            await node.heartbeat(rng.choice(sessions))
        else:
            await node.end(rng.choice(sessions))

    for _ in range(20):
        cluster.clock.now += rng.uniform(0, 40)
        await asyncio.gather(*(act() for _ in range(6)))
        # Renewals are written behind; with the clock racing ahead of real time, one flush
        # spans rounds, so each round ends with them written.
        await asyncio.gather(*(node.flush() for node in nodes))
        now = cluster.clock()
        at = datetime.fromtimestamp(now, UTC)
        doubled = await cluster.db.fetch(
            """SELECT number, count(*) FROM sessions
               WHERE number IS NOT NULL AND lease_expires_at > $1
               GROUP BY number HAVING count(*) > 1""",
            at,
        )
        assert doubled == []
        live = await cluster.db.fetchval(
            "SELECT count(*) FROM number_leases WHERE expires_at > $1", at
        )
        assert live <= len(POOL_NUMBERS)
        truth: dict[str, UUID | None] = {}

        async def converged(truth: dict[str, UUID | None] = truth) -> bool:
            # Read again each time: a flush already under way when the round ended lands now.
            truth.clear()
            truth.update(await cluster.truth())
            return all(cluster.index(node) == truth for node in nodes)

        await until(converged, "every node's index agrees with PostgreSQL")
        for node in nodes:
            for number, holder in truth.items():
                await node.prepare_call(number)
                attribution = node.attribute(number)
                assert attribution is not None and attribution.session_id == holder
    exhausted = [node.stats(cluster.pool_id) for node in nodes]
    assert sum(s.exhaustions for s in exhausted if s) > 0  # the nodes raced for the last numbers


async def test_a_node_that_lost_its_listen_connection_reads_again_and_is_right(
    database_dsn: str, stack: AsyncExitStack
) -> None:
    """Its LISTEN backend is killed: changes made meanwhile are never heard. Until it listens
    again, a call reads its number from PostgreSQL; once it does, it has read everything."""
    cluster = await make_cluster(database_dsn, stack, "reuse_oldest")
    deaf = await cluster.add_node(backoff=lambda n: 0.0)
    other = await cluster.add_node()
    first = await cluster.visit(other, "visitor-1")

    async def heard_first() -> bool:
        return first in cluster.index(deaf).values()

    await until(heard_first, "the first lease heard by NOTIFY")

    # Its reconnection waits for the test's word, not for a backoff a slow machine outruns.
    listener = cluster.listeners[0]
    reconnect = asyncio.Event()
    connect = listener.connect

    async def held_connect() -> None:
        await reconnect.wait()
        await connect()

    listener.connect = held_connect  # type: ignore[method-assign]
    killed = await cluster.db.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname = current_database() AND query LIKE 'LISTEN %'"""
    )
    assert killed >= 1

    async def deafened() -> bool:
        return not deaf.trusted

    await until(deafened, "the lost connection noticed")
    second = await cluster.visit(other, "visitor-2")
    (number,) = [n for n, s in (await cluster.truth()).items() if s == second]
    assert cluster.index(deaf)[number] is None  # never heard
    await deaf.prepare_call(number)  # so a call reads it
    attribution = deaf.attribute(number)
    assert attribution is not None and attribution.session_id == second

    third = await cluster.visit(other, "visitor-3")
    reconnect.set()

    async def caught_up() -> bool:
        return deaf.trusted and cluster.index(deaf) == await cluster.truth()

    await until(caught_up, "the node listening again and reading back what it missed")
    assert third in cluster.index(deaf).values()


async def test_a_pool_being_reloaded_still_answers_and_the_last_reload_wins(
    database_dsn: str, stack: AsyncExitStack
) -> None:
    """A number added to a pool NOTIFYs a reload (two, one per table); while one is reading,
    the pool must still be found by its key (the swap script got 404 "no pool with this key"
    in that window), and of two overlapping reloads the one begun last is kept."""
    cluster = await make_cluster(database_dsn, stack, "reuse_oldest", numbers=3)
    node = await cluster.add_node()
    live = node.pools[cluster.pool_id]
    key = live.pool.public_key
    locker = await asyncpg.connect(database_dsn)
    stack.push_async_callback(locker.close)
    # The reload's read of the pool's leases waits for this lock: it is mid-reload until the
    # test lets it go.
    transaction = locker.transaction()
    await transaction.start()
    await locker.execute("LOCK TABLE number_leases IN ACCESS EXCLUSIVE MODE")
    earlier = asyncio.get_running_loop().create_task(node.reload(cluster.pool_id))
    later = asyncio.get_running_loop().create_task(node.reload(cluster.pool_id))

    async def both_waiting() -> bool:
        waiting: int = await cluster.db.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        )
        return waiting >= 2

    await until(both_waiting, "both reloads waiting for the leases table")
    assert node.pool_by_key(key) is live  # still answering from what it was
    await transaction.rollback()
    await asyncio.gather(earlier, later)
    reloaded = node.pool_by_key(key)
    assert reloaded is not None and reloaded is not live
    assert node.pools[cluster.pool_id] is reloaded
    assert sorted(reloaded.numbers.numbers) == POOL_NUMBERS[:3]
    # A visit after the reload is served by the reloaded pool, and every node agrees.
    visit = await cluster.visit(node, "visitor-1")
    assert visit in cluster.index(node).values()


async def test_while_its_database_is_away_a_node_refuses_new_leases_and_keeps_the_ones_it_has(
    database_dsn: str, stack: AsyncExitStack, tmp_path: Path
) -> None:
    """New visits fail with the database's outage error (the API's 503 problem+json); a
    heartbeat of a lease in the node's index is served from memory and written once the
    database is back, so the lease outlives the hold the database last knew."""
    cluster = await make_cluster(database_dsn, stack, "reuse_oldest")
    link = await stack.enter_async_context(CuttableLink(database_dsn, tmp_path))
    cluster.dsn = link.dsn
    node = await cluster.add_node()
    session_id = await cluster.visit(node, "visitor-1")
    (number,) = [n for n, s in (await cluster.truth()).items() if s == session_id]

    await link.cut()
    with pytest.raises(OUTAGE_ERRORS):
        await cluster.visit(node, "visitor-2")
    cluster.clock.now += 50
    visit = await node.heartbeat(session_id)
    assert visit is not None and visit.record.lease_expires_at is not None
    assert visit.record.lease_expires_at.timestamp() == cluster.clock() + HOLD
    cluster.clock.now += 20  # past the hold PostgreSQL knows (leased at 0, until 60)
    attribution = node.attribute(number)
    assert attribution is not None and attribution.session_id == session_id

    await link.mend()
    assert await node.flush() == 1
    row = await leases.of_number(cluster.db, number)
    assert row is not None and row.session_id == session_id and row.expires_at is not None
    assert row.expires_at.timestamp() == cluster.clock() - 20 + HOLD
    assert (await cluster.truth())[number] == session_id


async def test_a_node_stopping_writes_the_renewals_it_holds_or_says_how_many_it_could_not(
    database_dsn: str, stack: AsyncExitStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop writes a heartbeat's renewal before the flush was due; a stop while the
    database is away gives the renewals up within its bound and logs how many."""
    cluster = await make_cluster(database_dsn, stack, "reuse_oldest")
    link = await stack.enter_async_context(CuttableLink(database_dsn, tmp_path))
    cluster.dsn = link.dsn
    node = await cluster.add_node()
    first = await cluster.visit(node, "visitor-1")
    second = await cluster.visit(node, "visitor-2")
    numbers = {s: n for n, s in (await cluster.truth()).items()}

    cluster.clock.now += 30
    await node.heartbeat(first)
    assert await node.stop() == 0
    row = await leases.of_number(cluster.db, numbers[first])
    assert row is not None and row.expires_at is not None
    assert row.expires_at.timestamp() == cluster.clock() + HOLD

    await link.cut()
    cluster.clock.now += 10
    await node.heartbeat(first)
    await node.heartbeat(second)
    with caplog.at_level("WARNING", logger="callrouter.routing.sessions"):
        assert await node.stop(within=5.0) == 2
    assert "sessions: 2 lease renewal(s) not written at stop" in caplog.text
    row = await leases.of_number(cluster.db, numbers[first])
    assert row is not None and row.expires_at is not None
    assert row.expires_at.timestamp() == cluster.clock() - 10 + HOLD  # the first stop's


async def test_a_heartbeat_answered_from_memory_reaches_the_database_within_a_flush(
    database_dsn: str, stack: AsyncExitStack
) -> None:
    """The page gets its new expiry at once; the lease row and the session row say so after
    the write-behind flush, with nothing but the heartbeat to trigger it."""
    cluster = await make_cluster(database_dsn, stack, "reuse_oldest")
    node = await cluster.add_node()
    session_id = await cluster.visit(node, "visitor-1")
    (number,) = [n for n, s in (await cluster.truth()).items() if s == session_id]
    cluster.clock.now += 30
    visit = await node.heartbeat(session_id)
    assert visit is not None and visit.record.lease_expires_at is not None
    renewed = cluster.clock() + HOLD
    assert visit.record.lease_expires_at.timestamp() == renewed

    async def written() -> bool:
        row = await leases.of_number(cluster.db, number)
        stored = await cluster.db.fetchrow(
            "SELECT last_seen_at, lease_expires_at FROM sessions WHERE id = $1", session_id
        )
        return (
            row is not None
            and row.expires_at is not None
            and row.expires_at.timestamp() == renewed
            and stored is not None
            and stored["last_seen_at"].timestamp() == cluster.clock()
            and stored["lease_expires_at"].timestamp() == renewed
        )

    await until(written, "the renewal in PostgreSQL")


async def test_no_node_takes_a_number_whose_holder_has_a_renewal_not_yet_written(
    database_dsn: str, stack: AsyncExitStack, tmp_path: Path
) -> None:
    """One number, no grace. Its holder's node renews it from memory a moment before the
    stored expiry and cannot write it (its link to the database is cut, so the race is held
    open). Past the stored expiry, another node's new visit gets no number; once the holder's
    node writes its renewal, the number is still its session's, on both nodes."""
    cluster = await make_cluster(database_dsn, stack, "default_number", grace=0, numbers=1)
    (number,) = POOL_NUMBERS[:1]
    link = await stack.enter_async_context(CuttableLink(database_dsn, tmp_path))
    cluster.dsn = link.dsn
    holder_node = await cluster.add_node()  # reaches the database through the link
    cluster.dsn = database_dsn
    other = await cluster.add_node()
    session_id = await cluster.visit(holder_node, "visitor-1")
    assert (await cluster.truth())[number] == session_id

    await link.cut()
    cluster.clock.now += HOLD - 0.5
    visit = await holder_node.heartbeat(session_id)
    assert visit is not None and visit.record.lease_expires_at is not None
    assert visit.record.lease_expires_at.timestamp() == cluster.clock() + HOLD
    cluster.clock.now += 1.0  # the stored lease ended half a second ago
    row = await leases.of_number(cluster.db, number)
    assert row is not None and row.expires_at is not None
    assert row.expires_at.timestamp() < cluster.clock()  # free, were the renewal forgotten
    stranger = await cluster.visit(other, "visitor-2")
    assert (await cluster.truth())[number] == session_id
    assert stranger not in cluster.index(other).values()

    await link.mend()

    async def written() -> bool:
        await holder_node.flush()
        row = await leases.of_number(cluster.db, number)
        return (
            row is not None
            and row.expires_at is not None
            and (row.expires_at.timestamp() > cluster.clock())
        )

    await until(written, "the renewal written once the database is reachable")
    assert (await cluster.truth())[number] == session_id

    async def heard() -> bool:
        lease = other.pools[cluster.pool_id].numbers.session(session_id, cluster.clock())
        return lease is not None and lease.expires_at > cluster.clock()

    await until(heard, "the other node hearing of the renewal")
