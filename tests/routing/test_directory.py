"""Numbers answer from memory once the database is away, and from the database while it is up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest

from callrouter.routing.directory import CHANNEL, NumberDirectory
from callrouter.store import numbers
from callrouter.store.availability import DatabaseAvailability
from callrouter.store.clients import CLIENTS, Client
from callrouter.store.database import create_pool
from callrouter.store.notifications import Notifications
from callrouter.store.numbers import NUMBERS, Number
from callrouter.supervisor import Supervisor
from tests.waiting import until


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
    directory = NumberDirectory(
        lambda e164: numbers.find_by_e164(pool, e164), lambda: numbers.list_all(pool), availability
    )
    await directory.resync()  # not listening: memory is never the answer

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


@dataclass
class Listened:
    """A directory kept by a real LISTEN connection, counting the queries calls make."""

    directory: NumberDirectory
    listener: Notifications
    client: Client
    reconnect: asyncio.Event
    read: Callable[[str], Awaitable[Number | None]]
    """How a call's query reads a number (a test may hold it open)."""
    every: Callable[[], Awaitable[list[Number]]]
    """How every number is read again (a test may hold it open)."""
    lookups: list[str] = field(default_factory=list)


@pytest.fixture
async def listened(
    pool: asyncpg.Pool[asyncpg.Record], database_dsn: str
) -> AsyncIterator[Listened]:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    listener = Notifications(database_dsn, backoff=lambda _n: 0.0)
    await listener.connect()
    reconnect = asyncio.Event()
    connect = listener.connect

    async def held_connect() -> None:  # reconnects when the test says, not on a backoff
        await reconnect.wait()
        await connect()

    listener.connect = held_connect  # type: ignore[method-assign]
    jobs = Supervisor()
    jobs.start("notifications", lambda: listener.run(lambda _line: None))

    async def lookup(e164: str) -> Number | None:
        listened.lookups.append(e164)
        return await listened.read(e164)

    async def every() -> list[Number]:
        return await listened.every()

    directory = NumberDirectory(lookup, every, DatabaseAvailability())
    listened = Listened(
        directory,
        listener,
        client,
        reconnect,
        lambda e164: numbers.find_by_e164(pool, e164),
        lambda: numbers.list_all(pool),
    )

    await listener.add_listener(CHANNEL, directory.on_change)
    listener.on_lost(directory.untrust)
    listener.on_listening(directory.listen)
    await directory.listen()
    yield listened
    await jobs.stop()
    await listener.close()


async def heard(directory: NumberDirectory, e164: str) -> None:
    async def changed() -> bool:
        return e164 in directory.changed_numbers

    await until(changed, f"the NOTIFY for {e164} heard")


async def test_calls_find_numbers_in_memory_and_each_change_is_read_once(
    pool: asyncpg.Pool[asyncpg.Record], listened: Listened
) -> None:
    directory, client = listened.directory, listened.client
    kept = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550001"}, {})
    await heard(directory, "+441515550001")  # then read whole, the insert taken as read
    await directory.resync()
    assert directory.answering_from_memory and directory.changed_numbers == {}
    for _ in range(3):
        found = await directory.find("+441515550001")
        assert found is not None and found.id == kept.id
    assert await directory.find("+441515559999") is None
    assert listened.lookups == [], "calls queried the database"

    # An edit, a number added and one deleted: each is read once, at its next call.
    await pool.execute(
        "UPDATE numbers SET destination = 'sip:new@pbx.example' WHERE id = $1", kept.id
    )
    added = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550002"}, {})

    async def edited() -> bool:
        found = await directory.find("+441515550001")
        return found is not None and found.destination == "sip:new@pbx.example"

    await until(edited, "the edit heard and read")

    async def added_found() -> bool:
        return await directory.find("+441515550002") is not None

    await until(added_found, "the new number heard and read")
    await pool.execute("DELETE FROM numbers WHERE id = $1", added.id)

    async def deleted() -> bool:
        return await directory.find("+441515550002") is None

    await until(deleted, "the deletion heard and read")
    before = len(listened.lookups)
    assert (await directory.find("+441515550001")) is not None
    assert await directory.find("+441515550002") is None
    assert len(listened.lookups) == before, "a number read again though it did not change"
    assert set(listened.lookups) == {"+441515550001", "+441515550002"}


async def test_a_lost_listen_connection_sends_calls_to_the_database_until_it_is_back(
    pool: asyncpg.Pool[asyncpg.Record], listened: Listened
) -> None:
    directory, client = listened.directory, listened.client
    number = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550001"}, {})
    await heard(directory, "+441515550001")
    await directory.resync()
    killed = await pool.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname = current_database() AND query LIKE 'LISTEN %'"""
    )
    assert killed >= 1

    async def deaf() -> bool:
        return not directory.answering_from_memory

    await until(deaf, "the lost connection noticed")
    # Unheard while nobody listens: only a query can see it.
    await pool.execute(
        "UPDATE numbers SET destination = 'sip:unheard@pbx.example' WHERE id = $1", number.id
    )
    found = await directory.find("+441515550001")
    assert found is not None and found.destination == "sip:unheard@pbx.example"
    assert listened.lookups == ["+441515550001"]

    listened.reconnect.set()

    async def listening_again() -> bool:
        return directory.answering_from_memory

    await until(listening_again, "listening again and every number read")
    before = len(listened.lookups)
    assert (await directory.find("+441515550001")) == found
    assert len(listened.lookups) == before


async def test_a_truncated_table_sends_calls_to_the_database_until_all_is_read_again(
    pool: asyncpg.Pool[asyncpg.Record], listened: Listened
) -> None:
    """A TRUNCATE names no number (its NOTIFY is empty): nothing in memory can be trusted."""
    directory, client = listened.directory, listened.client
    await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550001"}, {})
    await heard(directory, "+441515550001")
    await directory.resync()
    assert directory.answering_from_memory

    await pool.execute("TRUNCATE numbers CASCADE")

    async def untrusted() -> bool:
        return not directory.answering_from_memory

    await until(untrusted, "the TRUNCATE heard")
    assert await directory.find("+441515550001") is None, "a truncated number still routed"
    assert listened.lookups == ["+441515550001"]

    await directory.resync()  # what refresh() does while memory is not the answer
    assert directory.answering_from_memory
    assert await directory.find("+441515550001") is None
    assert listened.lookups == ["+441515550001"], "memory is the answer again"


async def test_a_change_heard_while_its_number_is_read_is_read_again(
    pool: asyncpg.Pool[asyncpg.Record], listened: Listened, database_dsn: str
) -> None:
    """A read that began before a change may return the row from before it: the change must
    stay to be read at the next call, not be taken as read because the read ended after it."""
    directory, client = listened.directory, listened.client
    number = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550001"}, {})
    await directory.resync()
    await pool.execute("UPDATE numbers SET label = 'one' WHERE id = $1", number.id)

    async def first_heard() -> bool:
        return "+441515550001" in directory.changed_numbers

    await until(first_heard, "the first change heard")
    snapshot_taken, second_heard = asyncio.Event(), asyncio.Event()
    reader = await asyncpg.connect(database_dsn)

    async def read_from_before(e164: str) -> Number | None:
        # The read's snapshot is taken, then the second change lands and is heard, then the
        # read returns the row as it was in its snapshot: label 'one'.
        async with reader.transaction(isolation="repeatable_read"):
            await reader.fetchval("SELECT 1")
            snapshot_taken.set()
            await second_heard.wait()
            return await numbers.find_by_e164(reader, e164)

    listened.read = read_from_before
    try:
        racing = asyncio.ensure_future(directory.find("+441515550001"))
        await asyncio.wait_for(snapshot_taken.wait(), 10)
        heard_before = directory.changed_numbers["+441515550001"]
        await pool.execute("UPDATE numbers SET label = 'two' WHERE id = $1", number.id)

        async def second() -> bool:
            return directory.changed_numbers.get("+441515550001", 0) > heard_before

        await until(second, "the second change heard")
        second_heard.set()
        stale = await racing
    finally:
        await reader.close()
    assert stale is not None and stale.label == "one"
    assert "+441515550001" in directory.changed_numbers, "a change taken as read, unread"
    listened.read = lambda e164: numbers.find_by_e164(pool, e164)
    found = await directory.find("+441515550001")
    assert found is not None and found.label == "two"


async def database_away(_e164: str) -> Number | None:
    raise ConnectionRefusedError("the database is away")


async def test_a_deleted_number_is_not_routed_from_memory_while_the_database_is_away(
    pool: asyncpg.Pool[asyncpg.Record], listened: Listened
) -> None:
    directory, client = listened.directory, listened.client
    kept = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550001"}, {})
    deleted = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550002"}, {})
    await heard(directory, "+441515550002")
    await directory.resync()
    await pool.execute("DELETE FROM numbers WHERE id = $1", deleted.id)
    await heard(directory, "+441515550002")

    listened.read = database_away  # the database goes before the number's next call
    assert await directory.find("+441515550002") is None, "a deleted number routed from memory"
    found = await directory.find("+441515550001")
    assert found is not None and found.id == kept.id


async def test_a_full_read_begun_before_a_deletion_does_not_bring_the_number_back(
    pool: asyncpg.Pool[asyncpg.Record], listened: Listened, database_dsn: str
) -> None:
    directory, client = listened.directory, listened.client
    deleted = await NUMBERS.insert(pool, {"client_id": client.id, "e164": "+441515550002"}, {})
    await heard(directory, "+441515550002")
    await directory.resync()
    snapshot_taken, deletion_heard = asyncio.Event(), asyncio.Event()
    reader = await asyncpg.connect(database_dsn)

    async def read_from_before() -> list[Number]:
        async with reader.transaction(isolation="repeatable_read"):
            await reader.fetchval("SELECT 1")
            snapshot_taken.set()
            await deletion_heard.wait()
            return await numbers.list_all(reader)

    listened.every = read_from_before
    try:
        racing = asyncio.ensure_future(directory.resync())
        await asyncio.wait_for(snapshot_taken.wait(), 10)
        before = directory.changed_numbers.get("+441515550002", 0)
        await pool.execute("DELETE FROM numbers WHERE id = $1", deleted.id)

        async def gone() -> bool:
            return directory.changed_numbers.get("+441515550002", 0) > before

        await until(gone, "the deletion heard")
        deletion_heard.set()
        await racing
    finally:
        await reader.close()
    listened.read = database_away
    assert await directory.find("+441515550002") is None, "the old read brought it back"
