"""The B2BUA dials out without waiting for the call's row: the outbound INVITE leaves while the
journal has not written CallStarted, and the row still lands, after a locked table is released
and after a database outage across a restart (the spool keeps it). Real PostgreSQL, the real
journal and spool, the real SIP endpoint on an in-memory wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
from twisted.internet.task import Clock

from callrouter.routing.b2bua import B2bua
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Event, Flow, RequestReceived
from callrouter.store import calls
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.numbers import NUMBERS, Number
from callrouter.store.spool import EventSpool
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.resolver import DnsLookup, Resolver
from callrouter.transport.service import SipService
from tests.waiting import until

CARRIER = Flow("udp", "198.51.100.7", 5060)
DESK = Flow("udp", "203.0.113.9", 5070)
INVITE = (
    b"INVITE sip:+441515550001@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKdurable1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+447700900123@carrier.example>;tag=carrier\r\n"
    b"To: <sip:+441515550001@192.0.2.1>\r\n"
    b"Call-ID: durable-1@carrier.example\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:gw@198.51.100.7:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class Wire:
    """Where the endpoint's datagrams go: kept, by destination."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Flow]] = []

    def send(self, data: bytes, flow: Flow) -> None:
        self.sent.append((data, flow))

    def invites_to(self, flow: Flow) -> int:
        return sum(1 for data, to in self.sent if to == flow and data.startswith(b"INVITE "))


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def desk_number(pool: asyncpg.Pool[asyncpg.Record]) -> Number:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    return await NUMBERS.insert(
        pool,
        {"client_id": client.id, "e164": "+441515550001"},
        {"destination": f"sip:desk@{DESK.host}:{DESK.port}"},
    )


def call_in(journal: CallJournal, number: Number, tmp_path: Path) -> tuple[B2bua, Wire]:
    """A B2BUA on the real endpoint, and the carrier's INVITE for ``number`` fed to it."""
    # Twisted's DNS client takes the process-wide reactor: install ours on the tests' loop first,
    # or it installs the default one and every later test that needs the asyncio reactor fails.
    asyncio_reactor(asyncio.get_running_loop())
    wire = Wire()
    service = SipService(SipEndpoint({"udp": "192.0.2.1:5060"}), Clock())
    service.senders["udp"] = wire
    trunk = Trunk("carrier")
    b2bua = B2bua(
        service,
        journal,
        DialplanLibrary(tmp_path / "dialplans", say=lambda _line: None),
        Resolver(DnsLookup([])),
        service.clock,
        TrunkTable(trunk),
    )

    def handle(event: Event) -> None:
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            caller = "+447700900123"
            b2bua.start(
                event.request, event.transaction_id, event.flow, number, caller=caller, trunk=trunk
            )

    service.handler = handle
    service.receive(INVITE, CARRIER)
    return b2bua, wire


async def row(pool: asyncpg.Pool[asyncpg.Record], call_id: UUID) -> calls.Call | None:
    return await calls.get(pool, call_id, None)


async def test_the_invite_leaves_before_the_call_row_is_written(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    number = await desk_number(pool)
    async with pool.acquire() as blocker:
        # The journal's writes wait behind this lock, as behind a slow database.
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
        async with CallJournal(pool, EventSpool(tmp_path / "spool", max_bytes=1 << 20)) as journal:
            b2bua, wire = call_in(journal, number, tmp_path)
            await until(lambda: wire.invites_to(DESK) == 1, "the INVITE to the desk", 20)
            flushed = asyncio.ensure_future(journal.flushed())
            await asyncio.sleep(0)
            assert not flushed.done()
            # The lock's holder sees the table: no call row yet, and the INVITE is out.
            assert await blocker.fetchval("SELECT count(*) FROM calls") == 0
            (call,) = b2bua.calls.values()
            await locked.rollback()
            await asyncio.wait_for(flushed, 20)
            written = await row(pool, call.id)
            assert written is not None and written.sip_call_id == "durable-1@carrier.example"


async def test_with_the_database_away_the_call_dials_and_its_row_lands_after_a_restart(
    pool: asyncpg.Pool[asyncpg.Record], database_dsn: str, tmp_path: Path
) -> None:
    number = await desk_number(pool)
    spool = tmp_path / "spool"
    # Nothing listens on port 1: every write fails as in an outage.
    away = await create_pool("postgresql://callrouter@127.0.0.1:1/none", min_size=0, max_size=1)
    try:
        journal = CallJournal(away, EventSpool(spool, max_bytes=1 << 20), backoff=lambda _n: 0.01)
        async with journal:
            b2bua, wire = call_in(journal, number, tmp_path)
            await until(lambda: wire.invites_to(DESK) == 1, "the INVITE to the desk", 20)
            (call,) = b2bua.calls.values()
            await until(
                lambda: journal.backlog >= 2, "two events in the backlog", 20
            )  # CallStarted, AttemptStarted
        # The process is gone; the spool on disk kept the call.
    finally:
        with contextlib.suppress(Exception):
            await away.close()
    assert await row(pool, call.id) is None
    async with CallJournal(pool, EventSpool(spool, max_bytes=1 << 20)) as restarted:
        assert restarted.replayed >= 2
        await asyncio.wait_for(restarted.flushed(), 20)
    written = await row(pool, call.id)
    assert written is not None and written.sip_call_id == "durable-1@carrier.example"
