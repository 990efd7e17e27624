"""The call journal writes call events in order, durably, and survives bad events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    RecordingRefused,
)
from callrouter.store import calls
from callrouter.store import sessions as session_store
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.pools import POOLS, new_public_key
from callrouter.store.sessions import SessionRecord
from callrouter.store.spool import Encoded, EventSpool, Spooled
from tests.call_started import call_started
from tests.database_link import CuttableLink
from tests.waiting import until

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


def started(call_id: UUID, client_id: UUID, at: datetime = T0) -> CallStarted:
    return call_started(
        call_id,
        client_id,
        at,
        sip_call_id="abc@carrier",
        attribution={"source": "google", "kind": "session"},
    )


async def test_a_whole_call_is_written_in_order(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    call_id = uuid4()
    async with CallJournal(pool) as journal:
        for event in (
            started(call_id, client.id),
            AttemptStarted(call_id, 1, "sip:desk@pbx.example", T0),
            AttemptEnded(call_id, 1, "busy", 486, "Busy Here", T0 + timedelta(seconds=1)),
            AttemptStarted(call_id, 2, "+442071838750", T0 + timedelta(seconds=1)),
            AttemptRinging(call_id, 2, T0 + timedelta(seconds=2)),
            CallRinging(call_id, T0 + timedelta(seconds=2)),
            AttemptAnswered(call_id, 2, T0 + timedelta(seconds=5)),
            CallAnswered(call_id, T0 + timedelta(seconds=5)),
            RecordingRefused(call_id, "destination offered no G.711 codec"),
            AttemptEnded(
                call_id, 2, "answered", 200, "BYE from callee", T0 + timedelta(seconds=65)
            ),
            CallEnded(call_id, "answered", "callee", "BYE", T0 + timedelta(seconds=65)),
        ):
            journal.record(event)
        await journal.flushed()
        assert journal.backlog == 0

    call = await calls.get(pool, call_id, client.id)
    assert call is not None
    assert (call.state, call.disposition, call.hangup_by) == ("ended", "answered", "callee")
    assert call.ringing_at == T0 + timedelta(seconds=2)
    assert call.answered_at == T0 + timedelta(seconds=5)
    assert call.not_recorded_reason == "destination offered no G.711 codec"
    assert call.attribution == {"source": "google", "kind": "session"}
    attempts = (await calls.attempts_of(pool, [call_id]))[call_id]
    assert [(a.seq, a.result, a.sip_status) for a in attempts] == [
        (1, "busy", 486),
        (2, "answered", 200),
    ]
    assert attempts[1].ringing_at == T0 + timedelta(seconds=2)


class CountingSpool(EventSpool):
    """A real spool on disk that notes the size of each write (each is one write and one fsync)."""

    writes: list[int]

    def write(self, encoded: Encoded) -> list[Spooled]:
        self.writes.append(len(encoded.spooled))
        return super().write(encoded)


async def test_events_of_one_flush_interval_take_one_write_and_one_fsync(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    spool = CountingSpool(tmp_path / "spool", max_bytes=1 << 20)
    spool.writes = []
    ids = [uuid4() for _ in range(20)]
    async with CallJournal(pool, spool, flush_interval=1.0) as journal:
        for call_id in ids:
            journal.record(started(call_id, client.id))
            await asyncio.sleep(0)  # the loop turns between events, as between two datagrams
        await journal.flushed()
    assert spool.writes == [20]
    for call_id in ids:
        assert await calls.get(pool, call_id, client.id) is not None


async def test_an_event_the_database_refuses_is_skipped_not_blocking(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    good = uuid4()
    async with CallJournal(pool) as journal:
        journal.record(started(uuid4(), uuid4()))  # no such client: a foreign key violation
        journal.record(started(good, client.id))
        journal.record(CallEnded(good, "cancelled", "caller", "CANCEL", T0))
        await journal.flushed()
    call = await calls.get(pool, good, None)
    assert call is not None and call.disposition == "cancelled"
    assert await pool.fetchval("SELECT count(*) FROM calls") == 1


async def test_writes_resume_after_the_database_connections_are_killed(
    pool: asyncpg.Pool[asyncpg.Record], database_dsn: str
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    first, second = uuid4(), uuid4()
    async with CallJournal(pool, backoff=lambda _n: 0.0) as journal:
        journal.record(started(first, client.id))
        await journal.flushed()
        admin = await asyncpg.connect(database_dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        journal.record(started(second, client.id))
        await journal.flushed()
    assert await pool.fetchval("SELECT count(*) FROM calls") == 2


async def test_calls_left_open_by_a_crash_are_closed_as_interrupted(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    live, done = uuid4(), uuid4()
    async with CallJournal(pool) as journal:
        journal.record(started(live, client.id))
        journal.record(AttemptStarted(live, 1, "sip:desk@pbx.example", T0))
        journal.record(CallAnswered(live, T0))
        journal.record(started(done, client.id))
        journal.record(CallEnded(done, "no_answer", "system", "ring timeout", T0))
        await journal.flushed()
    last_heartbeat = T0 + timedelta(seconds=42)
    assert len(await calls.close_interrupted(pool, last_heartbeat, "a")) == 1
    call = await calls.get(pool, live, None)
    assert call is not None
    assert (call.state, call.disposition, call.hangup_by) == ("ended", "interrupted", "system")
    # The call ended when the server was last alive, not when it was restarted.
    assert call.ended_at == last_heartbeat
    attempt = (await calls.attempts_of(pool, [live]))[live][0]
    assert (attempt.result, attempt.reason) == ("error", "server restarted")
    assert attempt.ended_at == last_heartbeat
    untouched = await calls.get(pool, done, None)
    assert untouched is not None and untouched.disposition == "no_answer"
    assert untouched.ended_at == T0
    assert await calls.close_interrupted(pool, None, "a") == []


async def test_a_call_that_started_after_the_last_heartbeat_ends_no_earlier_than_it_began(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    late = uuid4()
    async with CallJournal(pool) as journal:
        journal.record(started(late, client.id, T0 + timedelta(seconds=5)))
        journal.record(CallAnswered(late, T0 + timedelta(seconds=6)))
        await journal.flushed()
    assert len(await calls.close_interrupted(pool, T0, "a")) == 1
    call = await calls.get(pool, late, None)
    assert call is not None and call.ended_at == T0 + timedelta(seconds=6)


async def test_an_answered_attempt_stays_answered_when_a_crash_interrupts_its_call(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    talking, ringing = uuid4(), uuid4()
    async with CallJournal(pool) as journal:
        journal.record(started(talking, client.id))
        journal.record(AttemptStarted(talking, 1, "sip:desk@pbx.example", T0))
        journal.record(AttemptEnded(talking, 1, "busy", 486, "Busy Here", T0))
        journal.record(AttemptStarted(talking, 2, "sip:cell@pbx.example", T0))
        journal.record(AttemptRinging(talking, 2, T0 + timedelta(seconds=1)))
        journal.record(AttemptAnswered(talking, 2, T0 + timedelta(seconds=3)))
        journal.record(CallAnswered(talking, T0 + timedelta(seconds=3)))
        journal.record(started(ringing, client.id))
        journal.record(AttemptStarted(ringing, 1, "sip:desk@pbx.example", T0))
        journal.record(AttemptRinging(ringing, 1, T0 + timedelta(seconds=1)))
        await journal.flushed()
    last_heartbeat = T0 + timedelta(seconds=30)
    assert len(await calls.close_interrupted(pool, last_heartbeat, "a")) == 2
    call = await calls.get(pool, talking, None)
    assert call is not None
    assert (call.disposition, call.answered_at) == ("interrupted", T0 + timedelta(seconds=3))
    busy, answered = (await calls.attempts_of(pool, [talking]))[talking]
    assert (busy.result, busy.sip_status, busy.ended_at) == ("busy", 486, T0)
    assert (answered.result, answered.sip_status, answered.reason) == (
        "answered",
        200,
        "server restarted",
    )
    assert answered.answered_at == T0 + timedelta(seconds=3)
    assert answered.ended_at == last_heartbeat
    (unanswered,) = (await calls.attempts_of(pool, [ringing]))[ringing]
    assert (unanswered.result, unanswered.ended_at) == ("error", last_heartbeat)


async def test_events_after_held_ones_wait_behind_them_and_go_to_the_spool_after_them(
    pool: asyncpg.Pool[asyncpg.Record], database_dsn: str, tmp_path: Path
) -> None:
    """The database away and the spool at its limit: a call's start is held in memory. Room
    for the call's end alone does not spool it ahead of the start (a replay would end a call
    not started): it is held behind it. With room for both, both are spooled, in the order
    recorded, with no new event to carry them; the database, back, has the call once."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    call_id = uuid4()
    ended = CallEnded(call_id, "answered", "caller", "BYE", T0 + timedelta(seconds=30))
    spool = EventSpool(tmp_path / "spool", max_bytes=1)
    async with CuttableLink(database_dsn, tmp_path) as link:
        cut_pool = await create_pool(link.dsn, min_size=0, max_size=2)
        try:
            journal = CallJournal(
                cut_pool, spool, flush_interval=0, backoff=lambda _n: 0.02, respool_interval=0.05
            )
            async with journal:
                await link.cut()
                journal.record(started(call_id, client.id))
                await until(lambda: journal.held == 1, "one event held", 20)
                spool.max_bytes = len(spool.encode([ended]).data)  # the end fits, not both
                journal.record(ended)
                await until(lambda: journal.held == 2, "two events held", 20)
                assert on_disk(spool.directory) == []
                spool.max_bytes = 1 << 20
                await until(lambda: journal.held == 0, "the held events spooled", 20)
                assert on_disk(spool.directory) == [(1, "CallStarted"), (2, "CallEnded")]
                await link.mend()
                await asyncio.wait_for(journal.flushed(), 20)
        finally:
            await cut_pool.close()
    call = await calls.get(pool, call_id, client.id)
    assert call is not None and (call.state, call.disposition) == ("ended", "answered")
    assert await pool.fetchval("SELECT count(*) FROM calls") == 1


def on_disk(directory: Path) -> list[tuple[int, str]]:
    """(seq, event type) of every event in the spool's segment files, in file order."""
    return [
        (record["seq"], record["type"])
        for path in sorted(directory.glob("*.jsonl"))
        for record in map(json.loads, path.read_bytes().splitlines())
    ]


async def test_how_far_the_database_got_is_noted_once_per_interval_and_at_the_end(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    """A note per batch cost a file written and renamed 20 times a second under load; what
    goes unnoted is only replayed by a kill, which changes nothing."""
    client = await CLIENTS.insert(pool, {}, {"name": "Notes Ltd"})
    position = tmp_path / "spool" / "applied"
    first, second = uuid4(), uuid4()
    journal = CallJournal(
        pool, EventSpool(tmp_path / "spool", max_bytes=1 << 20), flush_interval=0, note_every=3600
    )
    async with journal:
        # The writer awaits a batch's note before it writes the next batch: once a batch is
        # in the database, every note of the batches before it is on disk.
        journal.record(started(first, client.id))
        await journal.flushed()
        journal.record(started(second, client.id))
        await journal.flushed()
        assert position.read_text() == "1"  # the first batch is noted at once
        journal.record(CallEnded(second, "cancelled", "caller", "CANCEL", T0))
        await journal.flushed()
        assert position.read_text() == "1", "noted again within the interval"
    assert position.read_text() == "3", "the end of the journal notes where it got"
    async with CallJournal(pool, EventSpool(tmp_path / "spool", max_bytes=1 << 20)) as again:
        assert again.replayed == 0


async def test_a_call_closed_as_interrupted_carries_its_visits_journey_up_to_its_start(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """What call.completed says of such a call: the pages that led to it, as its node would
    have sent them, not those the visitor saw while it was up."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    website = await POOLS.insert(
        pool, {"client_id": client.id, "public_key": new_public_key()}, {"name": "website"}
    )

    def view(path: str, seconds: int) -> dict[str, str]:
        at = (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return {"url": f"https://www.acme.example{path}", "title": path, "at": at}

    visit = SessionRecord(
        id=uuid4(),
        client_id=client.id,
        pool_id=website.id,
        visitor_id="visitor-1",
        number=None,
        attribution={"source": "google"},
        user_agent=None,
        ip_network=None,
        created_at=T0 - timedelta(seconds=60),
        last_seen_at=T0 + timedelta(seconds=30),
        lease_expires_at=None,
        ended=False,
        journey=[view("/", -60), view("/pricing", -10), view("/while-talking", 30)],
    )
    await session_store.save(pool, visit)
    visited, unattributed = uuid4(), uuid4()
    async with CallJournal(pool) as journal:
        journal.record(replace(started(visited, client.id), session_id=visit.id))
        journal.record(started(unattributed, client.id))
        await journal.flushed()
    closed = {c.id: c for c in await calls.close_interrupted(pool, T0 + timedelta(minutes=1), "a")}
    assert [v["url"] for v in closed[visited].journey] == [
        "https://www.acme.example/",
        "https://www.acme.example/pricing",
    ]
    assert closed[unattributed].journey == []
