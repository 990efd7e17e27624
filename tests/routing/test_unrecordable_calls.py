"""With the database away and the spool unable to take events (at its limit, or its disk full),
new calls would live in memory only: past ``max_held`` such events the front door answers new
INVITEs 503 with Retry-After, calls up go on, and calls are taken again once the database has
the events, or once the spool has room for them (they are written to it first, in order). Real
PostgreSQL behind a link the test cuts, the real journal and spool (on a real full tmpfs when
root), the real SIP endpoint and front door on an in-memory wire."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from callrouter.ip_networks import parse_networks
from callrouter.routing.b2bua import B2bua
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.front_door import UNRECORDABLE_RETRY_AFTER, FrontDoor
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.message import Request, parse_message
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import create_pool
from callrouter.store.numbers import Number
from callrouter.store.spool import EventSpool
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.resolver import DnsLookup, Resolver
from callrouter.transport.service import SipService
from tests.database_link import CuttableLink
from tests.routing.test_dial_before_durable import CARRIER, DESK, Wire, desk_number
from tests.store.test_webhook_events import fill, small_disk
from tests.waiting import until

MAX_HELD = 4
"""Two calls' first events (CallStarted, AttemptStarted each)."""


def invite(n: int) -> bytes:
    return (
        "INVITE sip:+441515550001@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CARRIER.host}:{CARRIER.port};branch=z9hG4bKheld{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+447700900123@carrier.example>;tag=carrier{n}\r\n"
        "To: <sip:+441515550001@192.0.2.1>\r\n"
        f"Call-ID: held-{n}@carrier.example\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:gw@{CARRIER.host}:{CARRIER.port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Door:
    """The carrier's side of a front door whose B2BUA records into ``journal``."""

    def __init__(self, journal: CallJournal, number: Number, tmp_path: Path) -> None:
        asyncio_reactor(asyncio.get_running_loop())  # see test_dial_before_durable.call_in
        self.wire = Wire()
        self.service = SipService(SipEndpoint({"udp": "192.0.2.1:5060"}), Clock())
        self.service.senders["udp"] = self.wire
        trunks = TrunkTable(Trunk("carrier", parse_networks(f"{CARRIER.host}/32")))
        b2bua = B2bua(
            self.service,
            journal,
            DialplanLibrary(tmp_path / "dialplans", say=lambda _line: None),
            Resolver(DnsLookup([])),
            self.service.clock,
            trunks,
        )

        async def find_number(_e164: str) -> Number:
            return number

        self.front_door = FrontDoor(
            self.service.respond,
            find_number,
            trunks,
            calls=b2bua,
            unrecordable=lambda: journal.refusing_calls,
        )
        self.service.handler = self.front_door.handle
        self.calls = 0

    async def call(self) -> bytes:
        """Send a new INVITE: the final answer it gets, or that it was put to the desk."""
        self.calls += 1
        call_id = f"Call-ID: held-{self.calls}@".encode()
        offered = self.wire.invites_to(DESK)
        self.service.receive(invite(self.calls), CARRIER)

        def outcome() -> bytes | None:
            if self.wire.invites_to(DESK) > offered:
                return b"INVITE to the desk"
            for data, to in self.wire.sent:
                if to == CARRIER and call_id in data and not data.startswith(b"SIP/2.0 100 "):
                    return data
            return None

        await until(lambda: outcome() is not None, "the INVITE answered", 20)
        return outcome() or b""


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


class FullSpool:
    """A real spool, made to take nothing once open (at its limit, or its tmpfs full), and
    given room again."""

    def __init__(self, spool: EventSpool, disk: Path | None) -> None:
        self.spool = spool
        self.disk = disk

    def fill(self) -> None:
        if self.disk is None:
            self.spool.max_bytes = 1
        else:
            fill(self.disk)

    def make_room(self) -> None:
        if self.disk is None:
            self.spool.max_bytes = 1 << 20
        else:
            (self.disk / "filler").unlink()


@pytest.fixture(params=["spool at its limit", "disk full"])
def full(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullSpool]:
    if request.param == "spool at its limit":
        yield FullSpool(EventSpool(tmp_path / "spool", max_bytes=1 << 20), None)
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    with small_disk(tmp_path, "64k") as disk:
        yield FullSpool(EventSpool(disk / "spool", max_bytes=1 << 20), disk)


async def refusing(
    database_dsn: str, tmp_path: Path, stack: AsyncExitStack, full: FullSpool
) -> tuple[Door, CallJournal, CuttableLink]:
    """A front door past the cap: the spool full, the database cut, a new call refused."""
    link = await stack.enter_async_context(CuttableLink(database_dsn, tmp_path))
    pool = await create_pool(link.dsn, min_size=0, max_size=2)
    stack.push_async_callback(pool.close)
    number = await desk_number(pool)
    journal = CallJournal(
        pool,
        full.spool,
        flush_interval=0,
        backoff=lambda _n: 0.02,
        max_held=MAX_HELD,
        respool_interval=0.05,
    )
    await stack.enter_async_context(journal)
    full.fill()  # after the spool is open, as a disk that fills while serving
    door = Door(journal, number, tmp_path)

    # The spool refuses every batch, but the database is there: held events are written at
    # once, and no call is refused however many come.
    for _ in range(3):
        assert await door.call() == b"INVITE to the desk"
        await journal.flushed()
    assert journal.unspooled >= 6 and journal.held == 0

    await link.cut()
    assert await door.call() == b"INVITE to the desk"
    assert await door.call() == b"INVITE to the desk"
    await until(lambda: journal.held >= MAX_HELD, "max_held events held", 20)
    refused = await door.call()
    assert refused.startswith(b"SIP/2.0 503 "), refused
    assert f"Retry-After: {UNRECORDABLE_RETRY_AFTER}\r\n".encode() in refused
    assert door.front_door.refused == {"unrecordable": 1}
    return door, journal, link


async def test_past_the_cap_new_calls_get_503_until_the_database_is_back(
    database_dsn: str, tmp_path: Path, stack: AsyncExitStack, full: FullSpool
) -> None:
    door, journal, link = await refusing(database_dsn, tmp_path, stack, full)
    await link.mend()
    await asyncio.wait_for(journal.flushed(), 20)
    assert journal.held == 0 and not journal.refusing_calls
    assert await door.call() == b"INVITE to the desk"


def on_disk(directory: Path) -> list[tuple[int, str, str]]:
    """(seq, event type, call id) of every event in the spool's segment files, in file order."""
    records = [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    return [(r["seq"], r["type"], r["event"]["call_id"]) for r in records]


async def test_held_events_go_to_the_spool_in_order_once_it_has_room_though_the_database_is_away(
    database_dsn: str, tmp_path: Path, stack: AsyncExitStack, full: FullSpool
) -> None:
    door, journal, _link = await refusing(database_dsn, tmp_path, stack, full)
    directory = full.spool.directory
    assert on_disk(directory) == []  # the calls up so far are in memory only
    full.make_room()
    # No call records anything meanwhile: the held events are offered to the spool again.
    await until(lambda: not journal.refusing_calls, "calls taken again", 20)
    assert journal.held == 0
    held = on_disk(directory)
    assert [kind for _seq, kind, _call in held] == ["CallStarted", "AttemptStarted"] * 2
    # A held call ends: its end is spooled after its start, under the next numbers.
    fourth = [data for data, to in door.wire.sent if to == DESK and data.startswith(b"INVITE ")][3]
    offered = parse_message(fourth)
    assert isinstance(offered, Request)
    door.service.receive(offered.response(486, to_tag="desk").to_bytes(), DESK)
    await until(
        lambda: any(kind == "CallEnded" for _seq, kind, _call in on_disk(directory)),
        "CallEnded spooled",
        20,
    )
    spooled = on_disk(directory)
    assert [seq for seq, _kind, _call in spooled] == list(range(1, len(spooled) + 1))
    assert spooled[: len(held)] == held
    ended = next(call for _seq, kind, call in spooled if kind == "CallEnded")
    kinds = [kind for _seq, kind, call in spooled if call == ended]
    assert kinds[0] == "CallStarted" and kinds[-1] == "CallEnded", kinds
    assert journal.held == 0 and not journal.refusing_calls
    assert await door.call() == b"INVITE to the desk"
