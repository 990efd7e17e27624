"""A call's webhook events ride the call journal: spooled with the call's own events, and
queued once however often the spool is replayed. Real PostgreSQL, a real spool."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
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
from callrouter.store.spool import EventSpool
from callrouter.store.webhooks import WEBHOOKS, Webhook

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
    return CallStarted(
        call_id=call_id,
        client_id=client_id,
        number_id=None,
        tracking_number="+441515550001",
        caller_number="+447700900123",
        sip_call_id=f"{call_id}@carrier",
        trunk="carrier-a",
        dialplan="default",
        session_id=None,
        attribution={"source": attribution},
        record=False,
        at=T0,
    )


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
