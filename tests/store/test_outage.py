"""A killed PostgreSQL: the supervisor restarts it, the journal loses nothing, and what a killed
server leaves behind never stops the next start. Real kills of a real embedded server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from callrouter.call_events import CallAnswered, CallEnded, CallStarted, RecordingFinished
from callrouter.store import calls, recordings
from callrouter.store.availability import DatabaseAvailability
from callrouter.store.call_journal import CallJournal
from callrouter.store.call_rows import Written
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.embedded import EmbeddedPostgres, server_processes
from callrouter.store.spool import EventSpool
from tests.call_started import call_started
from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import seed_cluster
from tests.waiting import until

T0 = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """A copy of the suite's migrated cluster for the module (initdb is the slow part)."""
    data_dir = world_traversable_tempdir("callrouter-outage-")
    seed_cluster(data_dir)
    root = data_dir / "postgres"
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


@pytest.fixture
def server(cluster: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(cluster)
    server.start()
    yield server
    server.stop()


def started(call_id: UUID, client_id: UUID) -> CallStarted:
    return call_started(
        call_id, client_id, T0, sip_call_id="outage@carrier", trunk="config", record=False
    )


@pytest.fixture
async def pool(server: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(server.dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_a_killed_postmaster_is_restarted_and_events_of_the_outage_land_once(
    server: EmbeddedPostgres, pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Outage Ltd"})
    said: list[str] = []
    availability = DatabaseAvailability()
    supervisor = asyncio.create_task(
        server.supervise(said.append, availability.report, backoff=lambda _n: 0.3)
    )
    spool = EventSpool(tmp_path / "spool", max_bytes=1 << 20)
    before, during = uuid4(), uuid4()
    try:
        async with CallJournal(
            pool, spool, availability=availability, backoff=lambda _n: 0.05
        ) as journal:
            journal.record(started(before, client.id))
            await journal.flushed()

            killed = server.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            await until(lambda: not availability.up, "the outage noticed", 30)

            # A whole call happens while the database is away: it goes to disk, not nowhere.
            for event in (
                started(during, client.id),
                CallAnswered(during, T0),
                CallEnded(during, "answered", "caller", "BYE", T0),
            ):
                journal.record(event)
            await until(lambda: spool.bytes > 0 and journal.backlog > 0, "events spooled", 30)

            await asyncio.wait_for(journal.flushed(), 60)
            assert journal.backlog == 0
            # The journal may reach the new server a moment before the supervisor sees it ready.
            await until(lambda: any("restarted" in line for line in said), "the restart logged", 30)
    finally:
        supervisor.cancel()

    assert server.pid != killed
    assert any("exited" in line for line in said), said
    assert any(f"restarted (pid {server.pid})" in line for line in said), said
    assert availability.up
    rows = await pool.fetch("SELECT id, state FROM calls")
    assert sorted((r["id"], r["state"] == "ended") for r in rows) == sorted(
        [(before, False), (during, True)]
    )
    call = await calls.get(pool, during, client.id)
    assert call is not None and call.disposition == "answered"


async def test_events_spooled_before_a_kill_are_written_at_the_next_start(
    server: EmbeddedPostgres, pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Crash Ltd"})
    call = uuid4()
    # The last run spooled a call and was killed before the database had it.
    spool = EventSpool(tmp_path / "spool", max_bytes=1 << 20)
    spool.open()
    spool.append([started(call, client.id), CallEnded(call, "cancelled", "caller", "CANCEL", T0)])
    spool.close()

    async with CallJournal(pool, EventSpool(tmp_path / "spool", max_bytes=1 << 20)) as journal:
        assert journal.replayed == 2
        await journal.flushed()
    async with CallJournal(pool, EventSpool(tmp_path / "spool", max_bytes=1 << 20)) as journal:
        assert journal.replayed == 0, "applied events are not replayed"
    assert await pool.fetchval("SELECT count(*) FROM calls WHERE id = $1", call) == 1
    row = await calls.get(pool, call, client.id)
    assert row is not None and row.disposition == "cancelled"


def test_what_a_killed_server_leaves_does_not_stop_the_next_start(cluster: Path) -> None:
    first = EmbeddedPostgres(cluster)
    first.start()
    killed = first.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    first._process.wait()  # type: ignore[union-attr]
    # Its postmaster.pid still says "ready" and its socket is still there: neither is trusted.
    assert (cluster / "pgdata" / "postmaster.pid").exists()
    assert EmbeddedPostgres.running_dsn(cluster) is None
    # Worse: the dead server's pid now belongs to another, live process.
    with subprocess.Popen(["sleep", "60"]) as other:
        pidfile = cluster / "pgdata" / "postmaster.pid"
        lines = pidfile.read_text().splitlines()
        pidfile.write_text("\n".join([str(other.pid), *lines[1:]]) + "\n")

        second = EmbeddedPostgres(cluster)
        second.start()  # first time, no retry
        try:
            assert second.pid not in (None, killed)
            assert EmbeddedPostgres.running_dsn(cluster) == second.dsn

            async def ask() -> int:
                connection = await asyncpg.connect(second.dsn)
                try:
                    return int(await connection.fetchval("SELECT 1"))
                finally:
                    await connection.close()

            assert asyncio.run(ask()) == 1
        finally:
            second.stop()
            other.kill()
    assert server_processes(cluster / "pgdata") == []


async def test_a_recording_finished_while_the_database_is_away_is_stored_after_a_stop(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The database stopped, a recorded call ends and its recording is finished, then the
    journal is stopped (serve's SIGTERM) before the database is back: the next start stores
    the call, then its recording's row."""
    pool = await create_pool(server.dsn, min_size=1, max_size=2)
    try:
        client = await CLIENTS.insert(pool, {}, {"name": "Stopped Ltd"})
        call = uuid4()
        spool = tmp_path / "spool"
        availability = DatabaseAvailability()
        async with CallJournal(
            pool,
            EventSpool(spool, max_bytes=1 << 20),
            availability=availability,
            backoff=lambda _n: 0.05,
        ) as journal:
            server.stop()
            journal.record(started(call, client.id))
            journal.record(CallEnded(call, "answered", "caller", "BYE", T0))
            journal.record(
                RecordingFinished(
                    call_id=call,
                    recording_id=call,
                    event_id=uuid4(),
                    path=f"{call}.flac",
                    format="flac",
                    bytes=1000,
                    duration_seconds=1.0,
                    peaks={},
                    interrupted=False,
                    truncated_reason=None,
                    at=T0,
                )
            )
            await until(lambda: not availability.up, "the outage noticed", 30)
        assert journal.backlog == 3  # none written: the spool keeps them for the next start
    finally:
        pool.terminate()

    server.start()
    pool = await create_pool(server.dsn, min_size=1, max_size=2)
    try:
        made: list[Written] = []
        async with CallJournal(
            pool, EventSpool(spool, max_bytes=1 << 20), recordings_written=made.append
        ) as journal:
            assert journal.replayed == 3
            await journal.flushed()
        assert [r.id for w in made for r in w.recordings] == [call]
        recording = await recordings.get(pool, call, client.id)
        assert recording is not None and recording.call_id == call
    finally:
        await pool.close()
