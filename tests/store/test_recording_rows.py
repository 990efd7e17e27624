"""A finished recording rides the call journal: its row and its recording.ready event are on
disk (the spool) with the call's events, stored after the call's row, and stored once however
often the spool is replayed. A recording whose call was erased meanwhile is queued for
shredding instead. Real PostgreSQL and a real spool."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from callrouter.call_events import CallAnswered, CallEnded, CallStarted, RecordingFinished
from callrouter.store import recordings as store
from callrouter.store.call_journal import CallJournal
from callrouter.store.call_rows import Written, write_batch
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.ids import derived_id, new_id
from callrouter.store.spool import EventSpool
from callrouter.store.webhooks import WEBHOOKS
from tests.call_started import call_started

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
PEAKS = {"buckets": 2, "frames": 16000, "channels": [{"min": [-0.5, 0.0], "max": [0.5, 0.1]}]}


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=3)
    yield pool
    await pool.close()


def started(call_id: UUID, client_id: UUID) -> CallStarted:
    return call_started(call_id, client_id, T0)


def finished(call_id: UUID, truncated: str | None = None) -> RecordingFinished:
    return RecordingFinished(
        call_id=call_id,
        recording_id=call_id,
        event_id=new_id(),
        path=f"{call_id}.flac",
        format="flac",
        bytes=12345,
        duration_seconds=2.0,
        peaks=PEAKS,
        interrupted=False,
        truncated_reason=truncated,
        at=T0 + timedelta(seconds=5),
    )


async def test_a_spooled_recording_gets_one_row_and_one_event_however_often_it_is_replayed(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    hook = await WEBHOOKS.insert(
        pool,
        {"client_id": client.id, "secret": "s"},
        {"url": "https://hooks.example/in", "events": ["recording.ready"]},
    )
    call_id = uuid4()
    done = finished(call_id, truncated="the recordings disk is full (No space left on device)")
    # What a run killed while the database was away leaves: the call and its recording on
    # disk, nothing in the database; the recording in the same batch as its call's start.
    directory = tmp_path / "spool"
    spool = EventSpool(directory, max_bytes=1 << 20)
    spool.open()
    spool.append([started(call_id, client.id), CallAnswered(call_id, T0 + timedelta(seconds=1))])
    spool.append([CallEnded(call_id, "answered", "caller", "BYE", T0 + timedelta(seconds=5))])
    spool.append([done])
    spool.close()
    left = tmp_path / "left"
    shutil.copytree(directory, left)

    seen: list[Written] = []
    for _replay in range(3):
        # The first start, then two after a kill between the commit and the spool's note.
        shutil.rmtree(directory)
        shutil.copytree(left, directory)
        journal = CallJournal(
            pool, EventSpool(directory, max_bytes=1 << 20), recordings_written=seen.append
        )
        async with journal:
            assert journal.replayed == 4
            await journal.flushed()

    (made,) = [r for w in seen for r in w.recordings]  # announced by the first start only
    assert (made.id, made.call_id, made.client_id) == (call_id, call_id, client.id)
    assert made.started_at == T0 + timedelta(seconds=1)  # the answer, from the call's row
    assert made.ended_at == done.at
    assert made.truncated_reason == done.truncated_reason
    assert await pool.fetchval("SELECT peaks FROM recordings") == PEAKS
    assert (
        await pool.fetchval("SELECT recording_truncated_reason FROM calls WHERE id = $1", call_id)
        == done.truncated_reason
    )
    (delivery,) = await pool.fetch("SELECT id, event, payload FROM webhook_deliveries")
    assert delivery["id"] == derived_id(done.event_id, hook.id)
    assert delivery["event"] == "recording.ready"
    assert delivery["payload"]["created_at"] == done.at.isoformat().replace("+00:00", "Z")
    data = delivery["payload"]["data"]
    assert (data["id"], data["call_id"], data["format"]) == (str(call_id), str(call_id), "flac")
    assert data["truncated"] is True
    assert "caller_number" not in data


async def test_a_recording_reported_twice_keeps_its_row_and_event_and_takes_the_new_path(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """A file finalised again (a second report of one recording, e.g. a recover after a
    kill between the rename and the worker's report) is no second recording."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    await WEBHOOKS.insert(
        pool,
        {"client_id": client.id, "secret": "s"},
        {"url": "https://hooks.example/in", "events": ["recording.ready"]},
    )
    call_id = uuid4()
    first = finished(call_id)
    again = replace(finished(call_id), path=f"{call_id}.pcm")
    async with pool.acquire() as connection, connection.transaction():
        one = await write_batch(connection, [started(call_id, client.id), first])
        two = await write_batch(connection, [again, again])
    assert ([r.id for r in one.recordings], one.deliveries) == ([call_id], 1)
    assert (two.recordings, two.deliveries, two.erased) == ([], 0, 0)
    assert await pool.fetchval("SELECT path FROM recordings") == f"{call_id}.pcm"
    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 1


async def test_a_recording_whose_call_was_erased_is_queued_for_shredding(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    kept, erased = uuid4(), uuid4()
    async with pool.acquire() as connection, connection.transaction():
        await write_batch(connection, [started(kept, client.id), started(erased, client.id)])
    await pool.execute("DELETE FROM calls WHERE id = $1", erased)  # an erasure, meanwhile
    async with pool.acquire() as connection, connection.transaction():
        written = await write_batch(connection, [finished(erased), finished(kept)])
    assert [r.id for r in written.recordings] == [kept]
    assert written.erased == 1
    assert await store.pending_disposals(pool) == [(erased, f"{erased}.flac")]
    assert await store.without_rows(pool, [kept, erased]) == {}
