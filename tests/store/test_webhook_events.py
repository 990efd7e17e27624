"""A call's webhook events ride the call journal: spooled with the call's own events, queued
once however often the spool is replayed, and a disk too full to spool them (or to note what the
database has) is logged and counted while the events still reach the database. Real
PostgreSQL, a real spool, a real tmpfs filled to the last page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from callrouter.call_events import CallEnded, CallStarted, WebhookRaised
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.ids import derived_id, new_id
from callrouter.store.spool import Encoded, EventSpool, Spooled
from callrouter.store.webhooks import WEBHOOKS, Webhook
from tests.call_started import call_started
from tests.waiting import until

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def client_with_hooks(pool: asyncpg.Pool[asyncpg.Record]) -> tuple[UUID, Webhook, Webhook]:
    """A client with a webhook for every call event and one for call.completed only."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    every = await WEBHOOKS.insert(
        pool,
        {"client_id": client.id, "secret": "every-secret"},
        {"url": "https://hooks.example/all", "events": ["call.started", "call.completed"]},
    )
    ends = await WEBHOOKS.insert(
        pool,
        {"client_id": client.id, "secret": "ends-secret"},
        {"url": "https://hooks.example/ends", "events": ["call.completed"]},
    )
    return client.id, every, ends


def started(call_id: UUID, client_id: UUID, attribution: str = "google") -> CallStarted:
    return call_started(call_id, client_id, T0, attribution={"source": attribution}, record=False)


def raised(call_id: UUID, client_id: UUID, event: str) -> WebhookRaised:
    payload = {"event": event, "created_at": T0.isoformat(), "data": {"call_id": str(call_id)}}
    return WebhookRaised(call_id, client_id, new_id(), event, payload, T0)


async def deliveries(pool: asyncpg.Pool[asyncpg.Record]) -> list[asyncpg.Record]:
    sql = "SELECT id, webhook_id, event, payload FROM webhook_deliveries ORDER BY id"
    return list(await pool.fetch(sql))


async def test_a_spooled_webhook_event_is_queued_once_however_often_it_is_replayed(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    client_id, every, ends = await client_with_hooks(pool)
    call_id = uuid4()
    begun = raised(call_id, client_id, "call.started")
    ended = raised(call_id, client_id, "call.completed")
    # What a run killed while the database was away leaves: events on disk, none written.
    directory = tmp_path / "spool"
    spool = EventSpool(directory, max_bytes=1 << 20)
    spool.open()
    spool.append(
        [started(call_id, client_id), begun, CallEnded(call_id, "answered", "caller", "BYE", T0)]
    )
    spool.append([ended])
    spool.close()

    expected = {
        (derived_id(begun.event_id, every.id), every.id, "call.started"),
        (derived_id(ended.event_id, every.id), every.id, "call.completed"),
        (derived_id(ended.event_id, ends.id), ends.id, "call.completed"),
    }
    left = tmp_path / "left"
    shutil.copytree(directory, left)
    woken: list[int] = []
    for _replay in range(3):
        # The first start, then two after a kill that came once the database had committed
        # but before the spool noted it: the same files, every event on them replayed.
        shutil.rmtree(directory)
        shutil.copytree(left, directory)
        journal = CallJournal(
            pool,
            EventSpool(directory, max_bytes=1 << 20),
            webhooks_queued=lambda: woken.append(1),
        )
        async with journal:
            await asyncio.wait_for(journal.flushed(), 20)
        assert journal.replayed == 4
        rows = await deliveries(pool)
        assert {(r["id"], r["webhook_id"], r["event"]) for r in rows} == expected
        assert woken == [1], "the sender is woken for new deliveries only"
    (row,) = [r for r in rows if r["event"] == "call.started"]
    assert row["payload"] == begun.payload


class CountingSpool(EventSpool):
    """A real spool on disk that notes the size of each write (each is one write and one fsync)."""

    writes: list[int]

    def write(self, encoded: Encoded) -> list[Spooled]:
        self.writes.append(len(encoded.spooled))
        return super().write(encoded)


async def test_webhook_events_take_no_fsync_of_their_own(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    """With the database up, a call's webhook events go to disk in the write and fsync its own
    events take anyway, and reach the database in the same batch."""
    client_id, every, _ends = await client_with_hooks(pool)
    spool = CountingSpool(tmp_path / "spool", max_bytes=1 << 20)
    spool.writes = []
    async with CallJournal(pool, spool, flush_interval=1.0) as journal:
        for _ in range(20):
            call_id = uuid4()
            journal.record(started(call_id, client_id))
            journal.record(raised(call_id, client_id, "call.started"))
            await asyncio.sleep(0)  # the loop turns between calls, as between two datagrams
        await asyncio.wait_for(journal.flushed(), 20)
    assert spool.writes == [40]
    rows = await deliveries(pool)
    assert [(r["webhook_id"], r["event"]) for r in rows] == [(every.id, "call.started")] * 20


async def test_an_event_no_webhook_of_its_client_wants_queues_nothing(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client_id, _every, _ends = await client_with_hooks(pool)
    other = await CLIENTS.insert(pool, {}, {"name": "Other"})
    call_id = uuid4()
    woken: list[int] = []
    async with CallJournal(pool, webhooks_queued=lambda: woken.append(1)) as journal:
        journal.record(started(call_id, client_id))
        journal.record(raised(call_id, client_id, "call.answered"))  # asked for by none
        journal.record(raised(call_id, other.id, "call.started"))  # a client with no webhook
        await asyncio.wait_for(journal.flushed(), 20)
    assert await deliveries(pool) == []
    assert woken == []


@contextlib.contextmanager
def small_disk(under: Path, size: str, name: str = "disk") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``under / name`` (needs root: mount(2))."""
    mount = under / name
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free page of ``disk`` with a file of our own."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(descriptor, b"\0" * 4096)
    finally:
        os.close(descriptor)
    return filler


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
async def test_a_full_disk_is_logged_and_counted_and_the_events_still_reach_the_database(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_id, every, _ends = await client_with_hooks(pool)
    call_id = uuid4()
    with small_disk(tmp_path, "64k") as disk:
        directory = disk / "spool"
        spool = EventSpool(directory, max_bytes=1 << 20)
        journal = CallJournal(pool, spool, flush_interval=0, backoff=lambda _n: 0.01)
        async with pool.acquire() as blocker:
            # The journal's writes wait behind this lock while the disk fills: the events it
            # spooled are noted as written only once the disk is full.
            locked = blocker.transaction()
            await locked.start()
            await blocker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
            async with journal:
                journal.record(started(call_id, client_id))
                journal.record(raised(call_id, client_id, "call.started"))
                await until(lambda: spool.bytes > 0, "events spooled", 20)
                filler = fill(disk)
                await locked.rollback()
                await asyncio.wait_for(journal.flushed(), 20)

                # Spooling fails now (part of the batch fits in the segment's last page, the
                # rest does not): logged, counted, and the events still reach the database.
                journal.record(started(uuid4(), client_id, attribution="x" * 20_000))
                journal.record(CallEnded(call_id, "answered", "caller", "BYE", T0))
                journal.record(raised(call_id, client_id, "call.completed"))
                await asyncio.wait_for(journal.flushed(), 20)
                assert journal.unspooled == 3

                # Room again: spooled again, after nothing of the failed batch.
                filler.unlink()
                later = raised(call_id, client_id, "call.completed")
                journal.record(CallEnded(call_id, "answered", "caller", "BYE", T0))
                journal.record(later)
                await asyncio.wait_for(journal.flushed(), 20)
                assert journal.unspooled == 3
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("cannot note the spool's position" in m for m in messages), messages
        assert any("cannot spool events to disk" in m for m in messages), messages
        assert any("spooling to disk again" in m for m in messages), messages

        # On disk: the first batch and the last, whole; the failed one cut off, not half there.
        caplog.clear()
        (directory / "applied").write_text("0")
        held = EventSpool(directory, max_bytes=1 << 20).open()
        assert [type(s.event).__name__ for s in held] == [
            "CallStarted",
            "WebhookRaised",
            "CallEnded",
            "WebhookRaised",
        ]
        assert held[-1].event == later
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    rows = await deliveries(pool)
    assert sorted(r["event"] for r in rows if r["webhook_id"] == every.id) == [
        "call.completed",
        "call.completed",
        "call.started",
    ]
    row = await pool.fetchrow("SELECT state FROM calls WHERE id = $1", call_id)
    assert row is not None and row["state"] == "ended"


async def test_a_spool_at_its_limit_is_logged_and_counted_and_the_events_still_land(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_id, every, _ends = await client_with_hooks(pool)
    call_id = uuid4()
    async with CallJournal(pool, EventSpool(tmp_path, max_bytes=200), flush_interval=0) as journal:
        journal.record(started(call_id, client_id))
        journal.record(raised(call_id, client_id, "call.started"))
        await asyncio.wait_for(journal.flushed(), 20)
        assert journal.unspooled == 2
    assert "cannot spool events to disk (the spool holds 0 bytes (limit 200))" in caplog.text
    rows = await deliveries(pool)
    assert [(r["webhook_id"], r["event"]) for r in rows] == [(every.id, "call.started")]
