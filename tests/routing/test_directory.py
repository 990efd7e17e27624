"""Numbers answer from memory once the database is away, and from the database while it is up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from callrouter.routing.directory import NumberDirectory
from callrouter.store import numbers
from callrouter.store.availability import DatabaseAvailability
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.numbers import NUMBERS


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_memory_answers_when_the_database_is_gone_and_edits_apply_while_it_is_up(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    loaded = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550001"}, {})
    availability = DatabaseAvailability()
    directory = NumberDirectory(lambda e164: numbers.find_by_e164(pool, e164), availability)
    directory.load(await numbers.list_all(pool))

    # Added after the load: found in the database, and remembered.
    added = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550002"}, {})
    found = await directory.find("+441515550002")
    assert found is not None and found.id == added.id
    # An edit applies to the next call while the database answers.
    await pool.execute(
        "UPDATE numbers SET destination = 'sip:new@pbx.example' WHERE id = $1", loaded.id
    )
    edited = await directory.find("+441515550001")
    assert edited is not None and edited.destination == "sip:new@pbx.example"

    await pool.close()  # the database is away: every query now fails
    assert (await directory.find("+441515550001")) == edited
    assert (await directory.find("+441515550002")) == found
    assert await directory.find("+441515559999") is None
    assert not availability.up, "the failed lookup told the others"
