"""Several nodes on one PostgreSQL: names, heartbeats, lost nodes' calls, once-only duties,
and migrations started by two nodes at once. Real PostgreSQL, real sessions: a "killed" node
is one whose socket is closed without a word, as the kernel does for a SIGKILLed process."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import uuid4

import asyncpg
import pytest

from callrouter.call_events import CallAnswered
from callrouter.cluster import ClusterNode, Duty, node_name
from callrouter.config import ConfigError
from callrouter.store import calls, nodes
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.embedded import EmbeddedPostgres
from callrouter.store.migrations import available, migrate
from callrouter.supervisor import Job
from tests.store.test_call_journal import T0, started
from tests.waiting import until


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


def test_a_node_name_is_a_plain_name_or_the_host_name() -> None:
    assert node_name("node-a.eu_1") == "node-a.eu_1"
    assert node_name("")  # the host name
    for bad in ("-a", "a b", "a/b", "x" * 64, "é"):
        with pytest.raises(ConfigError, match=r"cluster\.node: a node name is"):
            node_name(bad)


async def test_a_second_live_node_of_the_same_name_is_refused_until_the_first_dies(
    database_dsn: str,
) -> None:
    first = ClusterNode(database_dsn, "node-a", lambda _: None)
    await first.join()
    twin = ClusterNode(database_dsn, "node-a", lambda _: None)
    with pytest.raises(ConfigError, match="a live node is already named 'node-a'"):
        await twin.join()
    other = ClusterNode(database_dsn, "node-b", lambda _: None)
    await other.join()  # another name is welcome
    assert first._connection is not None
    first._connection.terminate()  # killed: the socket closes, PostgreSQL drops the lock
    restarted = ClusterNode(database_dsn, "node-a", lambda _: None)
    deadline = time.monotonic() + 10
    while True:
        try:
            await restarted.join()
            break
        except ConfigError:
            # The server notices the closed socket a moment later.
            assert time.monotonic() < deadline, "the dead node's name was never released"
            await asyncio.sleep(0.05)
    await restarted.leave()
    await other.leave()


async def _open_call(pool: asyncpg.Pool[asyncpg.Record], node: str | None) -> uuid.UUID:
    client = await CLIENTS.insert(pool, {}, {"name": f"Client of {node}"})
    call_id = uuid4()
    async with CallJournal(pool, node=node) as journal:
        journal.record(started(call_id, client.id))
        journal.record(CallAnswered(call_id, T0 + timedelta(seconds=1)))
        await journal.flushed()
    return call_id


async def _state(pool: asyncpg.Pool[asyncpg.Record], call_id: uuid.UUID) -> tuple[str, str | None]:
    row = await pool.fetchrow("SELECT state, hangup_reason FROM calls WHERE id = $1", call_id)
    assert row is not None
    return row["state"], row["hangup_reason"]


async def test_only_a_lost_nodes_calls_are_closed_at_its_last_heartbeat(
    pool: asyncpg.Pool[asyncpg.Record], database_dsn: str
) -> None:
    # dead: late heartbeat, no session. stalled: late heartbeat, session alive (a slow node,
    # never reaped). fresh: no session, but its heartbeat is recent (not timed out yet).
    sessions = {}
    for name in ("dead", "stalled", "fresh"):
        sessions[name] = await asyncpg.connect(database_dsn)
        claim = await nodes.claim(sessions[name], name)
        assert isinstance(claim, nodes.Claim)
    last_beat = T0 + timedelta(seconds=30)
    await pool.execute(
        "UPDATE nodes SET heartbeat_at = $1 WHERE name IN ('dead', 'stalled')", last_beat
    )
    call_of = {name: await _open_call(pool, name) for name in ("dead", "stalled", "fresh")}
    ended = await _open_call(pool, "dead")
    await pool.execute(
        "UPDATE calls SET state = 'ended', disposition = 'answered', hangup_by = 'caller', "
        "ended_at = $2 WHERE id = $1",
        ended,
        T0 + timedelta(seconds=5),
    )
    for name in ("dead", "fresh"):
        await sessions[name].close()
    deadline = time.monotonic() + 10
    while (closed := await calls.close_on_lost_nodes(pool, 10.0)) == []:
        assert time.monotonic() < deadline, "the dead node's session never went"
        await asyncio.sleep(0.05)
    # What the survivor's call.completed event for it is made of.
    assert [(c.id, c.node, c.hangup_reason) for c in closed] == [
        (call_of["dead"], "dead", "node dead lost")
    ]
    row = await pool.fetchrow(
        "SELECT state, disposition, hangup_by, hangup_reason, ended_at FROM calls WHERE id = $1",
        call_of["dead"],
    )
    assert row is not None
    assert tuple(row) == ("ended", "interrupted", "system", "node dead lost", last_beat)
    attempt = await pool.fetchval(
        "SELECT count(*) FROM call_attempts WHERE call_id = $1 AND ended_at IS NULL",
        call_of["dead"],
    )
    assert attempt == 0
    assert await _state(pool, call_of["stalled"]) == ("active", None)
    assert await _state(pool, call_of["fresh"]) == ("active", None)
    assert await _state(pool, ended) == ("ended", None)
    assert await calls.close_on_lost_nodes(pool, 10.0) == []  # once
    await sessions["stalled"].close()


async def test_a_restarting_node_closes_its_own_calls_and_the_pre_cluster_ones_only(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    mine, theirs, old = (
        await _open_call(pool, "node-a"),
        await _open_call(pool, "node-b"),
        await _open_call(pool, None),
    )
    closed = await calls.close_interrupted(pool, T0 + timedelta(seconds=9), "node-a")
    assert {c.id for c in closed} == {mine, old}
    assert {c.hangup_reason for c in closed} == {"server restarted"}
    assert await _state(pool, mine) == ("ended", "server restarted")
    assert await _state(pool, old) == ("ended", "server restarted")
    assert await _state(pool, theirs) == ("active", None)


async def test_each_duty_runs_on_one_node_and_moves_when_its_node_is_killed(
    database_dsn: str,
) -> None:
    running: dict[Duty, list[str]] = {duty: [] for duty in Duty}

    def doing(duty: Duty, name: str) -> Job:
        async def job() -> None:
            running[duty].append(name)
            try:
                await asyncio.Event().wait()
            finally:
                running[duty].remove(name)

        return job

    cluster: dict[str, ClusterNode] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    for name in ("node-a", "node-b"):
        node = ClusterNode(database_dsn, name, lambda _: None, beat_every=0.1)
        for duty in Duty:
            node.duty(duty, doing(duty, name))
        await node.join()
        cluster[name] = node
        tasks[name] = asyncio.create_task(node.run())
        if name == "node-a":
            await until(lambda: all(running.values()), "node-a to take every duty", 10)
    # node-b competes for every duty at each beat, and takes none: each has its one node.
    b = cluster["node-b"]
    await until(lambda: b.beats >= 3, "node-b to compete three times", 10)
    assert running == {duty: ["node-a"] for duty in Duty}
    probe = await asyncpg.connect(database_dsn)
    try:
        assert await nodes.duty_holder(probe, Duty.RETENTION_PURGE) == "node-a"
        # node-a is killed: no leave, its loop stops and its socket closes.
        tasks["node-a"].cancel()
        a = cluster["node-a"]
        assert a._connection is not None
        a._connection.terminate()
        await a._drop_duties()  # its jobs die with the process
        await until(
            lambda: running == {duty: ["node-b"] for duty in Duty}, "node-b to take over", 15
        )
        assert await nodes.duty_holder(probe, Duty.RETENTION_PURGE) == "node-b"
    finally:
        await probe.close()
        tasks["node-b"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks["node-b"]
        await cluster["node-b"].leave()
        await a.leave()


async def test_two_nodes_migrating_one_empty_database_at_once_apply_each_migration_once(
    postgres: EmbeddedPostgres,
) -> None:
    name = "empty_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres.admin_dsn.replace("/postgres?", f"/{name}?", 1)
    try:
        first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            applied = await asyncio.gather(migrate(first), migrate(second))
            versions = sorted(m.version for run in applied for m in run)
            assert versions == [m.version for m in available()]
            rows = await first.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            assert [r["version"] for r in rows] == versions
        finally:
            await first.close()
            await second.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_node_whose_session_is_cut_stops_its_duties_then_joins_and_takes_them_again(
    database_dsn: str,
) -> None:
    """A database failover or restart ends every session: the node must not go on doing
    duties it no longer holds, and must come back by itself."""
    said: list[str] = []
    node = ClusterNode(database_dsn, "node-a", said.append, beat_every=0.1, backoff=lambda n: 0.1)
    stopped: list[Duty] = []

    def doing(duty: Duty) -> Job:
        async def job() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append(duty)

        return job

    for duty in Duty:
        node.duty(duty, doing(duty))
    await node.join()
    task = asyncio.create_task(node.run())
    try:
        await until(lambda: len(node.held) == len(Duty), "every duty taken", 10)
        assert node._connection is not None
        pid = node._connection.get_server_pid()
        admin = await asyncpg.connect(database_dsn)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await until(lambda: any("is back on the database" in m for m in said), "rejoin", 15)
        assert any("lost its database session" in m for m in said), said
        assert sorted(stopped) == sorted(Duty)  # every duty stopped while the lock was gone
        await until(lambda: len(node.held) == len(Duty), "every duty taken again", 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await node.leave()
