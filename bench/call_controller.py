"""CPU per call spent in the sans-IO call controller, against parsing the call's INVITE.

Each call goes through the controller alone, with no sockets, timers or database: arrival, the
destination located, 180, 200, the caller's ACK and its BYE (what a plain answered call asks of
it). The reference, measured in the same run, is the SIP core parsing the carrier's INVITE once
(the least any call costs). Printed: microseconds per call for each, and their ratio.

usage: python3 bench/call_controller.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.routing.actions import Respond, SendRequest  # noqa: E402
from callrouter.routing.call import Call  # noqa: E402
from callrouter.routing.controller import Controller  # noqa: E402
from callrouter.routing.dialplan import Condition, Dial, Step  # noqa: E402
from callrouter.routing.events import (  # noqa: E402
    AckArrived,
    CallArrived,
    InDialogRequest,
    Resolved,
    Responded,
)
from callrouter.routing.trunks import Trunk  # noqa: E402
from callrouter.sip.dialogs import Dialog  # noqa: E402
from callrouter.sip.events import Flow  # noqa: E402
from callrouter.sip.message import Request, parse_message  # noqa: E402
from callrouter.sip.transactions import Timers  # noqa: E402
from callrouter.sip.uri import SipUri  # noqa: E402
from callrouter.store.ids import new_id  # noqa: E402
from callrouter.store.numbers import Number  # noqa: E402

CARRIER = Flow("udp", "198.51.100.7", 5060)
DESK = Flow("udp", "203.0.113.9", 5070)
AT = datetime(2026, 12, 7, tzinfo=UTC)
BODY = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"


def invite(n: int) -> bytes:
    return (
        "INVITE sip:+441515550001@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKbench{n}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900123@carrier.example>;tag=carrier\r\n"
        "To: <sip:+441515550001@192.0.2.1>\r\n"
        f"Call-ID: bench-{n}@carrier.example\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:gw@198.51.100.7:5060>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


class Local:
    def sent_by(self, flow: Flow) -> str:
        return "192.0.2.1:5060"

    def local_host(self, flow: Flow) -> str:
        return "192.0.2.1"


def one_call(controller: Controller, request: Request, number: Number, n: int) -> None:
    call = Call(
        id=new_id(),
        number=number,
        request=request,
        tid=f"tid-{n}",
        flow=CARRIER,
        local_tag=f"ours{n}",
        steps=[Step(Dial(("sip:desk@203.0.113.9:5070",)), Condition(), 1)],
        params={},
        record=False,
        trunk=Trunk("carrier"),
    )
    controller.handle(CallArrived(call), 0.0, AT)
    uri = SipUri("203.0.113.9", "desk", None, 5070, {})
    (sent,) = [
        a
        for a in controller.handle(Resolved(call.id, 1, uri, None, [DESK]), 0.0, AT)
        if isinstance(a, SendRequest)
    ]
    assert sent.ref is not None
    outbound = sent.request
    ringing = outbound.response(180, to_tag="pbx")
    controller.handle(Responded(sent.ref, ringing), 0.1, AT)
    ok = outbound.response(200, to_tag="pbx")
    ok.headers.add("Contact", "<sip:pbx@203.0.113.9:5070>")
    answered = controller.handle(Responded(sent.ref, ok), 0.2, AT)
    ours = next(a.response for a in answered if isinstance(a, Respond) and a.response.status == 200)
    carrier = Dialog.as_uac(request, ours, "sip:gw@198.51.100.7:5060")
    controller.handle(AckArrived(carrier.request("ACK", cseq=1)), 0.3, AT)
    controller.handle(InDialogRequest(f"bye-{n}", carrier.request("BYE")), 1.0, AT)
    assert not controller.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    calls = parser.parse_args().calls
    number = Number(
        new_id(), new_id(), "+441515550001", None, None, "default", {}, False,
        None, None, None, None, AT, AT,
    )  # fmt: skip
    wires = [invite(n) for n in range(calls)]

    started = time.process_time()
    requests = [cast(Request, parse_message(wire)) for wire in wires]
    parse = (time.process_time() - started) / calls

    controller = Controller(Local(), Timers())
    started = time.process_time()
    for n, request in enumerate(requests):
        one_call(controller, request, number, n)
    control = (time.process_time() - started) / calls

    print(f"calls: {calls} (answered, ACKed, hung up by the caller)")
    print(f"reference: parse the INVITE    {parse * 1e6:8.1f} us CPU per call")
    print(f"call controller (whole call)   {control * 1e6:8.1f} us CPU per call")
    print(f"ratio controller / parse       {control / parse:8.2f}")


if __name__ == "__main__":
    main()
