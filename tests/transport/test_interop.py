"""The core on real sockets against real peers: SIPp over UDP and TCP, and a pjsua2 phone."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from callrouter.transport.listeners import open_listeners
from callrouter.transport.reactor import asyncio_reactor
from tests.e2e.sipp import SCENARIOS, run_sipp_async
from tests.transport.responder import Responder

PHONE = Path(__file__).with_name("phone.py")


@pytest.fixture
async def responder() -> AsyncIterator[tuple[Responder, int]]:
    reactor = asyncio_reactor(asyncio.get_running_loop())
    async with AsyncExitStack() as stack:
        uas = Responder(reactor)
        stack.callback(uas.service.close)
        listening = await open_listeners(reactor, uas.service, "127.0.0.1", 0, stack)
        for opened in listening:
            uas.service.endpoint.advertised[opened.transport] = f"127.0.0.1:{opened.port}"
        yield uas, listening[0].port


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_options_ping(
    responder: tuple[Responder, int], tmp_path: Path, transport: str
) -> None:
    uas, port = responder
    code, output = await run_sipp_async(
        SCENARIOS / "options.xml", port, tmp_path, transport=transport
    )
    assert code == 0, output
    assert uas.seen == ["OPTIONS"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_call_invite_200_ack_bye(
    responder: tuple[Responder, int], tmp_path: Path, transport: str
) -> None:
    uas, port = responder
    code, output = await run_sipp_async("uac", port, tmp_path, transport=transport, calls=3)
    assert code == 0, output
    assert Counter(uas.seen) == {"INVITE": 3, "ACK": 3, "BYE": 3}  # calls may overlap
    assert uas.dialogs == {} and uas.repeaters == {}


async def test_pjsua2_phone_calls_and_hangs_up(
    responder: tuple[Responder, int], tmp_path: Path
) -> None:
    uas, port = responder
    phone = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PHONE),
        f"sip:+441515550001@127.0.0.1:{port}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(phone.communicate(), 60)
    text = output.decode(errors="replace")
    assert await phone.wait() == 0, text[-4000:]
    assert "phone: confirmed" in text
    assert uas.seen[:2] == ["INVITE", "ACK"] and "BYE" in uas.seen
    await asyncio.wait_for(uas.ended.wait(), 30)
