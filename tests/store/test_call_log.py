"""The call log: keyset pages in both directions, each filter, caller search, the stream."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from callrouter.call_events import CallEnded, CallStarted
from callrouter.store import call_log
from callrouter.store.call_journal import CallJournal
from callrouter.store.call_log import CallLogFilter
from callrouter.store.clients import CLIENTS
from callrouter.store.ids import id_floor, new_id

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


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


def made_at(at: datetime) -> UUID:
    """A UUIDv7 made at ``at``, as the router makes a call's id when the INVITE arrives."""
    return UUID(int=id_floor(at).int | secrets.randbits(62))


@pytest.fixture
async def calls(pool: asyncpg.Pool[asyncpg.Record]) -> tuple[UUID, list[UUID]]:
    """30 calls of a client, one a minute (ids made in that order), and 5 of another client;
    every third from bing, every fifth busy; caller +4477009001NN."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    other = await CLIENTS.insert(pool, {}, {"name": "Other"})
    ids = []
    async with CallJournal(pool) as journal:
        for n in range(35):
            at = T0 + n * timedelta(minutes=1)
            call_id = made_at(at)
            owner = client.id if n < 30 else other.id
            source = "bing" if n % 3 == 0 else "google"
            journal.record(
                CallStarted(
                    call_id,
                    owner,
                    None,
                    "+441515550001",
                    f"+4477009001{n:02d}",
                    "c@x",
                    "t",
                    "default",
                    None,
                    {"source": source, "campaign": "spring"},
                    False,
                    at,
                )
            )
            journal.record(
                CallEnded(
                    call_id,
                    "busy" if n % 5 == 0 else "no_answer",
                    "caller",
                    "BYE",
                    at + timedelta(seconds=20),
                )
            )
            if owner == client.id:
                ids.append(call_id)
        await journal.flushed()
    return client.id, ids


async def test_keyset_pages_walk_the_log_newest_first_both_ways_without_gaps(
    pool: asyncpg.Pool[asyncpg.Record], calls: tuple[UUID, list[UUID]]
) -> None:
    client_id, ids = calls
    newest_first = ids[::-1]
    where = CallLogFilter()
    seen: list[UUID] = []
    page = await call_log.page(pool, client_id, where, limit=7)
    pages = [page]
    while page:
        seen += [e.call.id for e in page]
        page = await call_log.page(pool, client_id, where, before=page[-1].call.id, limit=7)
        pages.append(page)
    assert seen == newest_first  # the other client's five never appear
    back = await call_log.page(pool, client_id, where, after=pages[2][0].call.id, limit=7)
    assert [e.call.id for e in back] == [e.call.id for e in pages[1]]


async def test_each_filter_narrows_the_log_and_the_stream_equals_the_pages(
    pool: asyncpg.Pool[asyncpg.Record], calls: tuple[UUID, list[UUID]]
) -> None:
    client_id, ids = calls

    async def found(where: CallLogFilter) -> list[int]:
        return [ids.index(e.call.id) for e in await call_log.page(pool, client_id, where)]

    assert await found(CallLogFilter(source="bing")) == [27, 24, 21, 18, 15, 12, 9, 6, 3, 0]
    assert await found(CallLogFilter(disposition="busy")) == [25, 20, 15, 10, 5, 0]
    assert await found(CallLogFilter(source="bing", disposition="busy")) == [15, 0]
    assert await found(CallLogFilter(campaign="autumn")) == []
    window = CallLogFilter(
        started_from=T0 + timedelta(minutes=10), started_before=T0 + timedelta(minutes=13)
    )
    assert await found(window) == [12, 11, 10]
    assert await found(CallLogFilter(recorded=True)) == []
    assert len(await found(CallLogFilter(recorded=False))) == 30
    # Caller search: the whole number, or its last digits however they were typed.
    assert await found(CallLogFilter(caller="+44 7700 900107")) == [7]
    assert await found(CallLogFilter(caller="0770 0900 107")) == [7]
    assert await found(CallLogFilter(caller="0012")) == [12]
    assert await found(CallLogFilter(caller="+44 7700 900131")) == []  # the other client's

    async with pool.acquire() as connection:
        streamed = [e.call.id async for e in call_log.stream(connection, client_id, window)]
    assert streamed == [ids[12], ids[11], ids[10]]


def test_the_id_floor_of_a_time_orders_ids_made_before_and_after_it() -> None:
    before = new_id()
    at = datetime.now(UTC) + timedelta(milliseconds=2)
    assert before < id_floor(at)
    assert id_floor(at) < id_floor(at + timedelta(milliseconds=1))
