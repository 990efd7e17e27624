"""The media worker as a real process relaying real UDP on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from callrouter.media.control import MediaError, MediaWorkerProcess

WAIT = 20.0


class Peer(asyncio.DatagramProtocol):
    """A UDP endpoint standing in for a phone's RTP socket."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, (addr[0], addr[1])))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, to: list[Any]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (to[0], to[1]))

    async def next(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.received.get(), WAIT)


@pytest.fixture
async def peer() -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    """Makes UDP peers, closed after the test."""
    made: list[Peer] = []

    async def make(host: str = "127.0.0.1") -> Peer:
        _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            Peer, local_addr=(host, 0)
        )
        made.append(protocol)
        return protocol

    yield make
    for protocol in made:
        assert protocol.transport is not None
        protocol.transport.close()


@pytest.fixture
async def events() -> asyncio.Queue[dict[str, Any]]:
    return asyncio.Queue()


@pytest.fixture
async def worker(
    tmp_path: Path, events: asyncio.Queue[dict[str, Any]]
) -> AsyncIterator[MediaWorkerProcess]:
    process = MediaWorkerProcess(
        tmp_path / "media.sock",
        "127.0.0.1",
        "41000-41019",
        media_timeout=1.0,
        on_event=events.put_nowait,
    )
    await process.start()
    yield process
    await process.stop()


async def test_relays_both_ways_symmetrically_and_refuses_injection(
    worker: MediaWorkerProcess, peer: Callable[..., Awaitable[Peer]]
) -> None:
    ports = await worker.command("create", call="c1")
    caller, callee, attacker = await peer(), await peer(), await peer("127.0.0.2")
    await worker.command(
        "signal", call="c1", leg="a", rtp=list(caller.address), rtcp=None, nat=False
    )
    await worker.command(
        "signal", call="c1", leg="b", rtp=list(callee.address), rtcp=None, nat=False
    )

    caller.send(b"from caller", ports["a"])
    data, source = await callee.next()
    assert (data, source) == (b"from caller", tuple(ports["b"]))
    callee.send(b"from callee", ports["b"])
    data, source = await caller.next()
    assert (data, source) == (b"from callee", tuple(ports["a"]))

    attacker.send(b"injected", ports["a"])
    caller.send(b"after the attack", ports["a"])
    data, _ = await callee.next()
    assert data == b"after the attack"  # the injected packet was dropped, not relayed
    stats = (await worker.command("query", call="c1"))["stats"]
    assert stats["a"]["rejected"] == 1
    assert stats["a"]["forwarded"] == 2
    totals = await worker.command("stats")  # what /metrics adds up: live calls count too
    assert (totals["packets_from_caller"], totals["packets_from_destination"]) == (2, 1)

    deleted = await worker.command("delete", call="c1")
    assert deleted["stats"]["b"]["forwarded"] == 1
    assert (await worker.command("delete", call="c1"))["stats"] is None  # idempotent
    totals = await worker.command("stats")  # ended calls stay counted
    counted = ("packets_from_caller", "packets_from_destination", "sessions")
    assert [totals[name] for name in counted] == [2, 1, 0]
    assert (await worker.command("ping"))["ports_in_use"] == 0


async def test_port_range_exhaustion_is_a_clear_refusal(worker: MediaWorkerProcess) -> None:
    for n in range(5):  # 41000-41019: ten pairs, two per call
        await worker.command("create", call=f"c{n}")
    with pytest.raises(MediaError, match="all 10 RTP port pairs are in use"):
        await worker.command("create", call="one too many")
    await worker.command("delete", call="c0")
    await worker.command("create", call="one too many")


async def test_silent_media_is_reported(
    worker: MediaWorkerProcess, events: asyncio.Queue[dict[str, Any]]
) -> None:
    await worker.command("create", call="quiet")
    event = await asyncio.wait_for(events.get(), WAIT)
    assert event == {"event": "media_timeout", "call": "quiet"}


async def test_a_killed_worker_is_restarted_and_its_calls_reported(
    worker: MediaWorkerProcess, events: asyncio.Queue[dict[str, Any]]
) -> None:
    await worker.command("create", call="doomed")
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    while (event := await asyncio.wait_for(events.get(), WAIT))["event"] != "worker_lost":
        pass
    assert event["calls"] == ["doomed"]
    ports = await worker.command("create", call="next")  # waits for the restarted worker
    assert ports["a"][0] == "127.0.0.1"
    assert worker.restarts == 1


async def next_of(events: asyncio.Queue[dict[str, Any]], kind: str) -> dict[str, Any]:
    while (event := await asyncio.wait_for(events.get(), WAIT))["event"] != kind:
        pass
    return event


async def test_a_worker_that_keeps_dying_is_restarted_after_a_doubling_pause(
    worker: MediaWorkerProcess,
    events: asyncio.Queue[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="callrouter.media.control")
    pauses = []
    for _ in range(3):  # each dies within a minute of its start
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        await next_of(events, "worker_lost")
        restarted = await next_of(events, "worker_restarted")
        assert restarted["pid"] == worker.pid
        pauses.append([r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()])
    # The first death is restarted at once; each next one, within a minute of the last start,
    # after a pause doubling from 0.5 s.
    assert pauses == [
        [],
        ["media worker 0: restarting in 0.5 s"],
        ["media worker 0: restarting in 0.5 s", "media worker 0: restarting in 1 s"],
    ]
    assert worker.restarts == 3 and worker.running


async def test_commands_sent_without_waiting_arrive_in_order(
    worker: MediaWorkerProcess, peer: Callable[..., Awaitable[Peer]]
) -> None:
    caller, callee = await peer(), await peer()
    # As the B2BUA issues them from synchronous code: no await between the sends.
    replies = [
        worker.send_nowait("create", call="c1"),
        worker.send_nowait(
            "signal", call="c1", leg="a", rtp=list(caller.address), rtcp=None, nat=False
        ),
        worker.send_nowait(
            "signal", call="c1", leg="b", rtp=list(callee.address), rtcp=None, nat=False
        ),
        worker.send_nowait("record", call="c1", recording="5b2d1d4e-8d0c-4d39-a8f5-02b0b8e7d0a1"),
        worker.send_nowait("delete", call="c1"),
        worker.send_nowait("delete", call="c1"),
    ]
    created, signalled_a, signalled_b, record, deleted, again = await asyncio.gather(
        *replies, return_exceptions=True
    )
    assert isinstance(created, dict) and created["a"][0] == "127.0.0.1"
    assert [signalled_a, signalled_b] == [{"id": 2, "ok": True}, {"id": 3, "ok": True}]
    assert isinstance(record, MediaError)
    assert str(record) == "this media worker does not record (no --recordings-dir)"
    assert isinstance(deleted, dict) and deleted["recording"] is None
    assert deleted["stats"]["a"]["received"] == 0
    assert isinstance(again, dict) and again["stats"] is None


async def test_a_command_to_a_stopped_worker_fails_at_once(worker: MediaWorkerProcess) -> None:
    await worker.stop()
    with pytest.raises(MediaError, match="not running"):
        await worker.send_nowait("ping")
