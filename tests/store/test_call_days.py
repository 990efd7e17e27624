"""The overview's daily roll-ups stay equal to counting the calls rows, whatever writes them."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from callrouter.call_events import CallAnswered, CallEnded, CallEvent, CallStarted
from callrouter.store import call_days
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.ids import new_id
from callrouter.store.privacy import delete_calls_into_counts

T0 = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
SOURCES = ["google", "bing", None]
CAMPAIGNS = ["spring", "brand", None]
PAGES = ["/offers", "/", None]


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async def init(connection: asyncpg.Connection[Any]) -> None:
        await connection.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )

    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=3, init=init)
    assert pool is not None
    yield pool
    await pool.close()


def random_call(rng: random.Random, client_id: UUID, at: datetime) -> list[CallEvent]:
    """A call from one of a few callers, attributed at random, ended one of three ways (or not
    at all: still ringing)."""
    call_id = new_id()
    attribution = {
        key: value
        for key, value in (
            ("source", rng.choice(SOURCES)),
            ("campaign", rng.choice(CAMPAIGNS)),
            ("landing_page", rng.choice(PAGES)),
        )
        if value is not None
    }
    caller = rng.choice(["+447700900001", "+447700900002", "+447700900003", None])
    events: list[CallEvent] = [
        CallStarted(
            call_id,
            client_id,
            None,
            "+441515550001",
            caller,
            "c@x",
            "t",
            "default",
            None,
            attribution,
            False,
            at,
        )
    ]
    ending = rng.choice(["answered", "no_answer", "busy", "live"])
    if ending == "answered":
        events.append(CallAnswered(call_id, at + timedelta(seconds=3)))
    if ending != "live":
        events.append(CallEnded(call_id, ending, "caller", "BYE", at + timedelta(seconds=30)))
    return events


async def counted(db: asyncpg.Pool[asyncpg.Record], client_id: UUID) -> list[tuple[Any, ...]]:
    """The roll-up rows with calls, sorted, to compare with a rebuild."""
    rows = await db.fetch(
        "SELECT day, source, campaign, disposition, calls, answered, first_time FROM call_days "
        "WHERE client_id = $1 AND (calls, answered, first_time) <> (0, 0, 0) ORDER BY 1, 2, 3, 4",
        client_id,
    )
    pages = await db.fetch(
        "SELECT day, landing_page, calls FROM call_page_days WHERE client_id = $1 AND calls <> 0 "
        "ORDER BY 1, 2",
        client_id,
    )
    return [tuple(r) for r in rows] + [tuple(r) for r in pages]


async def test_roll_ups_written_by_the_journal_in_batches_equal_a_rebuild_from_the_calls(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    rng = random.Random(15)
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    other = await CLIENTS.insert(pool, {}, {"name": "Other"})
    async with CallJournal(pool, max_batch=7) as journal:
        for n in range(120):  # across midnight UTC: two days
            for event in random_call(
                rng, rng.choice([client.id, other.id]), T0 + n * timedelta(minutes=1)
            ):
                journal.record(event)
        await journal.flushed()
    live = await counted(pool, client.id)
    assert sum(row[4] for row in live if len(row) == 7) == await pool.fetchval(
        "SELECT count(*) FROM calls WHERE client_id = $1", client.id
    )
    async with pool.acquire() as connection, connection.transaction():
        total = await call_days.rebuild(connection, client.id)
    assert await counted(pool, client.id) == live
    assert total == await pool.fetchval(
        "SELECT count(*) FROM calls WHERE client_id = $1", client.id
    )

    # First-time callers: each caller number's first call only, whatever the batches were.
    first = await pool.fetchval(
        "SELECT count(DISTINCT caller_number) FROM calls WHERE client_id = $1", client.id
    )
    figures = await call_days.overview(pool, client.id, date(2026, 11, 23), date(2026, 11, 24))
    assert figures.totals.first_time == first
    assert figures.totals.answered == await pool.fetchval(
        "SELECT count(*) FROM calls WHERE client_id = $1 AND answered_at IS NOT NULL", client.id
    )
    assert {d.day for d in figures.by_source} == {date(2026, 11, 23), date(2026, 11, 24)}
    assert sum(d.calls for d in figures.by_source) == figures.totals.calls


async def test_erased_calls_keep_counting_and_a_deleted_client_leaves_no_roll_up(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    rng = random.Random(7)
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    async with CallJournal(pool) as journal:
        for n in range(40):
            for event in random_call(rng, client.id, T0 + n * timedelta(minutes=1)):
                journal.record(event)
        await journal.flushed()
    days = (date(2026, 11, 23), date(2026, 11, 24))
    before = await call_days.overview(pool, client.id, *days)
    ended = [
        r["id"]
        for r in await pool.fetch(
            "SELECT id FROM calls WHERE client_id = $1 AND state = 'ended' LIMIT 10", client.id
        )
    ]
    assert await delete_calls_into_counts(pool, client.id, ended) == 10
    after = await call_days.overview(pool, client.id, *days)
    assert (after.totals.calls, after.totals.answered) == (
        before.totals.calls,
        before.totals.answered,
    )
    assert sorted(after.by_source, key=repr) == sorted(before.by_source, key=repr)
    assert after.top_landing_pages == before.top_landing_pages

    assert await CLIENTS.delete(pool, client.id, None)
    assert await pool.fetchval("SELECT count(*) FROM call_days") == 0
    assert await pool.fetchval("SELECT count(*) FROM call_page_days") == 0
