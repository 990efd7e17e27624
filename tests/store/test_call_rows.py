"""A batch of call events costs one statement per table and leaves what one-by-one writes leave."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    RecordingRefused,
)
from callrouter.store import calls
from callrouter.store.call_journal import CallJournal
from callrouter.store.call_rows import write_batch
from callrouter.store.clients import CLIENTS
from callrouter.store.ids import new_id
from callrouter.store.spool import EventSpool

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class StatementLog:
    """Every statement the pool's connections send, as PostgreSQL receives it."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, record: Any) -> None:
        self.queries.append(record.query)

    def writing(self, table: str) -> int:
        """Statements that write ``table`` (INSERT INTO or UPDATE)."""
        return sum(
            f"INSERT INTO {table} " in query or f"UPDATE {table} " in query
            for query in self.queries
        )


@pytest.fixture
def statements() -> StatementLog:
    return StatementLog()


@pytest.fixture
async def pool(
    database_dsn: str, statements: StatementLog
) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async def init(connection: asyncpg.Connection[Any]) -> None:
        for kind in ("json", "jsonb"):
            await connection.set_type_codec(
                kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        connection.add_query_logger(statements)

    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2, init=init)
    assert pool is not None
    yield pool
    await pool.close()


def started(call_id: UUID, client_id: UUID, at: datetime) -> CallStarted:
    return CallStarted(
        call_id=call_id,
        client_id=client_id,
        number_id=None,
        tracking_number="+441515550001",
        caller_number="+447700900123",
        sip_call_id="abc@carrier",
        trunk="carrier-a",
        dialplan="default",
        session_id=None,
        attribution={"source": "google"},
        record=True,
        at=at,
    )


def whole_call(call_id: UUID, client_id: UUID, at: datetime) -> list[CallEvent]:
    """Ten events: two destinations tried, the second answers, the caller hangs up."""
    return [
        started(call_id, client_id, at),
        AttemptStarted(call_id, 1, "sip:desk@pbx.example", at),
        AttemptEnded(call_id, 1, "busy", 486, "Busy Here", at + timedelta(seconds=1)),
        AttemptStarted(call_id, 2, "+442071838750", at + timedelta(seconds=1)),
        AttemptRinging(call_id, 2, at + timedelta(seconds=2)),
        CallRinging(call_id, at + timedelta(seconds=2)),
        AttemptAnswered(call_id, 2, at + timedelta(seconds=5)),
        CallAnswered(call_id, at + timedelta(seconds=5)),
        AttemptEnded(call_id, 2, "answered", 200, "BYE", at + timedelta(seconds=65)),
        CallEnded(call_id, "answered", "caller", "BYE", at + timedelta(seconds=65)),
    ]


async def assert_whole_calls(pool: asyncpg.Pool[asyncpg.Record], call_ids: list[UUID]) -> None:
    for call_id in call_ids:
        call = await calls.get(pool, call_id, None)
        assert call is not None
        assert (call.state, call.disposition, call.hangup_by) == ("ended", "answered", "caller")
        attempts = (await calls.attempts_of(pool, [call_id]))[call_id]
        assert [(a.seq, a.result, a.sip_status) for a in attempts] == [
            (1, "busy", 486),
            (2, "answered", 200),
        ]


async def test_a_batch_of_many_events_costs_one_statement_per_table(
    pool: asyncpg.Pool[asyncpg.Record], statements: StatementLog
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    call_ids = [new_id() for _ in range(20)]
    async with CallJournal(pool) as journal:
        statements.queries.clear()
        for n, call_id in enumerate(call_ids):  # recorded at once: the writer takes one batch
            for event in whole_call(call_id, client.id, T0 + timedelta(minutes=n)):
                journal.record(event)
        await journal.flushed()
    assert (statements.writing("calls"), statements.writing("call_attempts")) == (1, 1)
    await assert_whole_calls(pool, call_ids)


async def test_a_spool_replay_costs_one_statement_per_table_and_lands_once(
    pool: asyncpg.Pool[asyncpg.Record], statements: StatementLog, tmp_path: Path
) -> None:
    """What a crash left in the spool is written at the next start in one batch; replaying
    events the database already has (the crash came before the spool heard they landed)
    changes nothing."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    call_ids = [new_id() for _ in range(10)]
    events = [
        e
        for n, c in enumerate(call_ids)
        for e in whole_call(c, client.id, T0 + timedelta(minutes=n))
    ]
    spool = EventSpool(tmp_path, max_bytes=1 << 20)
    spool.open()
    spool.append(events)
    spool.close()
    async with pool.acquire() as connection:  # half of them landed before the crash
        await write_batch(connection, events[: len(events) // 2])

    statements.queries.clear()
    async with CallJournal(pool, EventSpool(tmp_path, max_bytes=1 << 20)) as journal:
        await journal.flushed()
        assert journal.replayed == len(events)
    assert (statements.writing("calls"), statements.writing("call_attempts")) == (1, 1)
    await assert_whole_calls(pool, call_ids)
    assert await pool.fetchval("SELECT count(*) FROM call_attempts") == 2 * len(call_ids)


# A script of events over two calls (slots 0 and 1) and their attempts 1 and 2, each call
# started first; later starts are replays. Times are the script's positions in seconds.
SLOT = st.integers(0, 1)
SEQ = st.integers(1, 2)
STEP = st.one_of(
    st.tuples(st.just("start"), SLOT),
    st.tuples(st.just("ringing"), SLOT),
    st.tuples(st.just("answered"), SLOT),
    st.tuples(st.just("ended"), SLOT, st.sampled_from(["answered", "busy", "cancelled"])),
    st.tuples(st.just("refused"), SLOT, st.sampled_from(["no codec", "no space"])),
    st.tuples(st.just("attempt"), SLOT, SEQ),
    st.tuples(st.just("attempt_ringing"), SLOT, SEQ),
    st.tuples(st.just("attempt_answered"), SLOT, SEQ),
    st.tuples(st.just("attempt_ended"), SLOT, SEQ, st.sampled_from(["busy", "answered"])),
)


def events_of(script: Sequence[tuple[Any, ...]], ids: list[UUID], client: UUID) -> list[CallEvent]:
    def event(n: int, step: tuple[Any, ...]) -> CallEvent:
        at = T0 + timedelta(seconds=n)
        kind, call_id, *rest = step[0], ids[step[1]], *step[2:]
        make: dict[str, Callable[[], CallEvent]] = {
            "start": lambda: started(call_id, client, at),
            "ringing": lambda: CallRinging(call_id, at),
            "answered": lambda: CallAnswered(call_id, at),
            "ended": lambda: CallEnded(call_id, rest[0], "caller", f"end {n}", at),
            "refused": lambda: RecordingRefused(call_id, f"{rest[0]} {n}"),
            "attempt": lambda: AttemptStarted(call_id, rest[0], f"sip:{n}@pbx.example", at),
            "attempt_ringing": lambda: AttemptRinging(call_id, rest[0], at),
            "attempt_answered": lambda: AttemptAnswered(call_id, rest[0], at),
            "attempt_ended": lambda: AttemptEnded(call_id, rest[0], rest[1], 200, f"{n}", at),
        }
        return make[kind]()

    opening = [("start", 0), ("start", 1)]
    return [event(n, step) for n, step in enumerate([*opening, *script])]


async def rows_of(pool: asyncpg.Pool[asyncpg.Record], ids: list[UUID]) -> list[tuple[Any, ...]]:
    """Both calls and their attempts, with each call id replaced by its slot."""
    slot = {call_id: n for n, call_id in enumerate(ids)}
    call_rows = await pool.fetch("SELECT * FROM calls WHERE id = any($1::uuid[])", ids)
    attempt_rows = await pool.fetch(
        "SELECT * FROM call_attempts WHERE call_id = any($1::uuid[])", ids
    )
    # first_call compares a call with the client's others: both copies share their caller.
    found = [
        ("call", slot[r["id"]], *(v for k, v in r.items() if k not in ("id", "first_call")))
        for r in call_rows
    ]
    found += [
        ("attempt", slot[r["call_id"]], *(v for k, v in r.items() if k != "call_id"))
        for r in attempt_rows
    ]
    return sorted(found, key=repr)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    script=st.lists(STEP, max_size=30),
    cuts=st.sets(st.integers(1, 31), max_size=4),
    replay_from=st.integers(0, 32),
)
async def test_batches_leave_what_one_by_one_writes_leave(
    pool: asyncpg.Pool[asyncpg.Record],
    script: list[tuple[Any, ...]],
    cuts: set[int],
    replay_from: int,
) -> None:
    """Any events, cut into any batches, then any tail of them replayed: the rows are those
    that writing each event alone, in order, makes; and where every attempt's events follow its
    start, as the B2BUA reports them, the replay changes nothing."""
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    one_by_one, batched = [new_id(), new_id()], [new_id(), new_id()]
    singles = events_of(script, one_by_one, client.id)
    events = events_of(script, batched, client.id)
    bounds = [0, *sorted(c for c in cuts if c < len(events)), len(events)]
    async with pool.acquire() as connection:
        for event in singles:
            async with connection.transaction():
                await write_batch(connection, [event])
        for start, end in pairwise(bounds):
            async with connection.transaction():
                await write_batch(connection, events[start:end])
        before_replay = await rows_of(pool, one_by_one)
        assert await rows_of(pool, batched) == before_replay

        for event in singles[replay_from:]:
            async with connection.transaction():
                await write_batch(connection, [event])
        async with connection.transaction():
            await write_batch(connection, events[replay_from:])
    assert await rows_of(pool, batched) == await rows_of(pool, one_by_one)
    if in_order(events):
        assert await rows_of(pool, batched) == before_replay


def in_order(events: list[CallEvent]) -> bool:
    """Every attempt's events come after its start."""
    begun: set[tuple[UUID, int]] = set()
    for event in events:
        match event:
            case AttemptStarted():
                begun.add((event.call_id, event.seq))
            case AttemptRinging() | AttemptAnswered() | AttemptEnded():
                if (event.call_id, event.seq) not in begun:
                    return False
    return True
