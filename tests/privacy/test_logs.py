"""Log lines never carry a caller's number: not in an event's repr, not in the call journal's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from callrouter.call_events import AttemptStarted, CallStarted
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from tests.privacy.conftest import CALLER

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CALL_ID = "callid-from-pc33.caller-host.example"
DESTINATION = "+447700900777"
PERSONAL = (CALLER, "caller-host", "gclid-of-the-visitor", DESTINATION)


def started(client_id: UUID, caller: Any = CALLER) -> CallStarted:
    return CallStarted(
        call_id=uuid4(),
        client_id=client_id,
        number_id=None,
        tracking_number="+441515550100",
        caller_number=caller,
        sip_call_id=CALL_ID,
        trunk=None,
        dialplan="default",
        session_id=None,
        attribution={"source": "google", "gclid": "gclid-of-the-visitor"},
        record=True,
        at=AT,
    )


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


def test_an_events_repr_shows_no_personal_field() -> None:
    event = started(uuid4())
    attempt = AttemptStarted(event.call_id, 1, DESTINATION, AT)
    for shown in (repr(event), str(event), repr(attempt), f"{attempt}"):
        assert str(event.call_id) in shown
        assert not [p for p in PERSONAL if p in shown], shown


async def test_an_event_the_journal_drops_is_logged_without_its_values(
    db: asyncpg.Pool[asyncpg.Record], caplog: pytest.LogCaptureFixture
) -> None:
    client = await CLIENTS.insert(db, {}, {"name": "Acme"})
    no_client = started(uuid4())  # the database refuses it: a foreign key violation
    unencodable = started(client.id, caller=447700900123)  # asyncpg refuses it: not a str
    good = started(client.id)
    with caplog.at_level(logging.INFO, logger="callrouter.store.call_journal"):
        async with CallJournal(db, backoff=lambda _n: 0.0) as journal:
            for event in (no_client, unencodable, good):
                journal.record(event)
            await journal.flushed()
    assert await db.fetchval("SELECT array_agg(id) FROM calls") == [good.call_id]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [
        f"call journal: dropped CallStarted of call {no_client.call_id}: "
        "ForeignKeyViolationError (sqlstate 23503, constraint calls_client_id_fkey)",
        f"call journal: dropped CallStarted of call {unencodable.call_id}: "
        "DataError (sqlstate 22000, constraint None)",
    ]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [p for p in (*PERSONAL, "447700900123") if p in logged], logged
