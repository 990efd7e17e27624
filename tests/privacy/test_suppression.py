"""The suppression list in memory: treatments, loading, and PostgreSQL keeping it fresh."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest

from callrouter.privacy.subjects import SubjectHasher
from callrouter.privacy.suppression import (
    CHANNEL,
    UNRESTRICTED,
    CallerTreatment,
    SuppressionList,
)
from callrouter.store import privacy as store
from callrouter.store.database import connect
from callrouter.store.ids import new_id

OBJECTED = "+447700900123"
WITHDRAWN = "+447700900456"
ANYONE = "+447700900789"


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    connection = await connect(database_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def new_client(db: asyncpg.Connection[asyncpg.Record]) -> UUID:
    client_id = new_id()
    await db.execute("INSERT INTO clients (id, name) VALUES ($1, 'Acme')", client_id)
    return client_id


async def suppress(
    db: asyncpg.Connection[asyncpg.Record],
    hasher: SubjectHasher,
    client: UUID,
    e164: str,
    reason: str,
) -> None:
    assert await store.add_suppression(db, client, hasher.phone(client, e164), reason, None)


async def test_each_reason_gets_its_treatment_and_other_callers_none(
    db: asyncpg.Connection[asyncpg.Record],
) -> None:
    hasher = SubjectHasher(os.urandom(32))
    client, other_client = await new_client(db), await new_client(db)
    await suppress(db, hasher, client, OBJECTED, "objection")
    await suppress(db, hasher, client, WITHDRAWN, "recording_consent_withdrawn")
    await suppress(db, hasher, client, OBJECTED, "recording_consent_withdrawn")
    suppressions = SuppressionList(hasher)
    assert await suppressions.load(db) == 3

    assert suppressions.treatment(client, OBJECTED) == CallerTreatment(
        suppressed=True, record_allowed=False
    )
    assert suppressions.treatment(client, WITHDRAWN) == CallerTreatment(
        suppressed=False, record_allowed=False
    )
    assert suppressions.treatment(client, ANYONE) == UNRESTRICTED
    assert suppressions.treatment(client, None) == UNRESTRICTED  # withheld
    assert suppressions.treatment(other_client, OBJECTED) == UNRESTRICTED
    # A list loaded with another secret recognises nobody.
    stranger = SuppressionList(SubjectHasher(os.urandom(32)))
    await stranger.load(db)
    assert stranger.treatment(client, OBJECTED) == UNRESTRICTED


async def test_changes_reach_the_list_through_listen_notify(
    db: asyncpg.Connection[asyncpg.Record], database_dsn: str
) -> None:
    hasher = SubjectHasher(os.urandom(32))
    client = await new_client(db)
    suppressions = SuppressionList(hasher)
    listener = await asyncpg.connect(database_dsn)
    notified: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        suppressions.on_notify(*args)
        notified.put_nowait(str(args[3]))

    try:
        await listener.add_listener(CHANNEL, on_notify)
        await suppressions.load(db)
        await suppress(db, hasher, client, OBJECTED, "objection")
        payload = await asyncio.wait_for(notified.get(), timeout=10)
        assert payload == "+objection:" + hasher.phone(client, OBJECTED).hex()
        assert suppressions.treatment(client, OBJECTED).suppressed

        # Another process erases the number: gone from this one's list too.
        assert await store.remove_suppressions(db, client, hasher.phone(client, OBJECTED)) == [
            "objection"
        ]
        await asyncio.wait_for(notified.get(), timeout=10)
        assert suppressions.treatment(client, OBJECTED) == UNRESTRICTED

        # Deleting the client deletes its entries, and says so.
        await suppress(db, hasher, client, WITHDRAWN, "recording_consent_withdrawn")
        await asyncio.wait_for(notified.get(), timeout=10)
        assert not suppressions.treatment(client, WITHDRAWN).record_allowed
        await db.execute("DELETE FROM clients WHERE id = $1", client)
        await asyncio.wait_for(notified.get(), timeout=10)
        assert suppressions.treatment(client, WITHDRAWN) == UNRESTRICTED
        assert len(suppressions) == 0
    finally:
        await listener.close()


async def test_a_change_notified_while_the_list_loads_is_not_lost(
    db: asyncpg.Connection[asyncpg.Record],
) -> None:
    hasher = SubjectHasher(os.urandom(32))
    client = await new_client(db)
    suppressions = SuppressionList(hasher)
    digest = hasher.phone(client, OBJECTED).hex()

    class Racing:
        """The database as seen by ``load``: the notification lands during the read."""

        async def fetch(self, *args: object) -> list[asyncpg.Record]:
            suppressions.on_notify(None, 0, CHANNEL, "+objection:" + digest)
            return await db.fetch(*args)

    assert await suppressions.load(Racing()) == 0
    assert suppressions.treatment(client, OBJECTED).suppressed


def test_malformed_notifications_are_ignored() -> None:
    suppressions = SuppressionList(SubjectHasher(os.urandom(32)))
    for payload in ("", "+", "*objection:00", "+unknown:" + "00" * 32, "+objection:zz"):
        suppressions.on_notify(None, 0, CHANNEL, payload)
    assert len(suppressions) == 0
