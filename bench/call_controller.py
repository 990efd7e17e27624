"""CPU per call spent in the sans-IO call controller, against parsing the call's INVITE.

Each call goes through the controller alone, with no sockets, timers or database: arrival, the
destination located, 180, 200, the caller's ACK and its BYE (what a plain answered call asks of
it). The reference, measured in the same run, is the SIP core parsing the carrier's INVITE once
(the least any call costs). Printed: microseconds per call for each, and their ratio.

With ``--up N``, N calls are answered and ACKed and left up instead (what a node with long
calls holds), their timers armed on a Twisted fake clock as serve's B2BUA arms them, and
printed are the objects the cyclic garbage collector tracks per call up and the CPU time of a
full collection with them up. ``--before DIR`` (a ``git archive`` of another
tree, e.g. main) measures that tree's controller first, in a process of its own, then this one.

usage: python3 bench/call_controller.py [--calls 20000] [--up 6000 [--before DIR]]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from twisted.internet import task

ROOT = Path(__file__).resolve().parent.parent
# With --before, a child process imports the controller of the tree named in CONTROLLER_TREE.
sys.path.insert(0, os.environ.get("CONTROLLER_TREE", str(ROOT)))
sys.path.insert(1, str(ROOT))  # bench.trees, whichever tree the child measures

from bench.trees import figures_per_tree  # noqa: E402
from callrouter.routing.actions import (  # noqa: E402
    Action,
    CancelTimer,
    Respond,
    SendRequest,
    StartTimer,
)
from callrouter.routing.call import Call, TimerKey  # noqa: E402
from callrouter.routing.controller import Controller  # noqa: E402
from callrouter.routing.dialplan import Condition, Dial, Step  # noqa: E402
from callrouter.routing.events import (  # noqa: E402
    AckArrived,
    CallArrived,
    ControllerEvent,
    InDialogRequest,
    Resolved,
    Responded,
)
from callrouter.routing.trunks import Trunk  # noqa: E402
from callrouter.sip.dialogs import Dialog  # noqa: E402
from callrouter.sip.events import Flow  # noqa: E402
from callrouter.sip.headers import parse_name_address  # noqa: E402
from callrouter.sip.message import Request, parse_message  # noqa: E402
from callrouter.sip.transactions import Timers  # noqa: E402
from callrouter.sip.uri import SipUri, parse_uri  # noqa: E402
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


CARRIER_TRUNK = Trunk("carrier")


Handle = Callable[[ControllerEvent, float, datetime], list[Action]]


def answer(handle: Handle, request: Request, number: Number, n: int) -> Dialog:
    """Call ``n`` arrives, is answered and ACKed through ``handle`` (the controller's): the
    carrier's side of its dialog."""
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
        trunk=CARRIER_TRUNK,  # serve's come from the configuration, one per carrier
    )
    handle(CallArrived(call), 0.0, AT)
    uri = SipUri("203.0.113.9", "desk", None, 5070, {})
    (sent,) = [
        a
        for a in handle(Resolved(call.id, 1, uri, None, [DESK]), 0.0, AT)
        if isinstance(a, SendRequest)
    ]
    assert sent.ref is not None
    outbound = sent.request
    ringing = outbound.response(180, to_tag="pbx")
    handle(Responded(sent.ref, ringing), 0.1, AT)
    ok = outbound.response(200, to_tag="pbx")
    ok.headers.add("Contact", "<sip:pbx@203.0.113.9:5070>")
    answered = handle(Responded(sent.ref, ok), 0.2, AT)
    ours = next(a.response for a in answered if isinstance(a, Respond) and a.response.status == 200)
    carrier = Dialog.as_uac(request, ours, "sip:gw@198.51.100.7:5060")
    handle(AckArrived(carrier.request("ACK", cseq=1)), 0.3, AT)
    return carrier


def one_call(controller: Controller, request: Request, number: Number, n: int) -> None:
    carrier = answer(controller.handle, request, number, n)
    controller.handle(InDialogRequest(f"bye-{n}", carrier.request("BYE")), 1.0, AT)
    assert not controller.calls


def tracked() -> int:
    parse_uri.cache_clear()  # bounded and shared between calls: out of the count
    parse_name_address.cache_clear()
    gc.collect()
    return len(gc.get_objects())


def armed(controller: Controller) -> Handle:
    """The controller's ``handle``, its timers armed on a Twisted fake clock as the tree's
    B2BUA arms them: on one reactor timer (routing/call_timers.py), or, in a tree from before
    it, a reactor timer each."""
    clock = task.Clock()
    start: Callable[[TimerKey, float], object]
    cancel: Callable[[TimerKey], object]
    if importlib.util.find_spec("callrouter.routing.call_timers") is not None:
        timers = importlib.import_module("callrouter.routing.call_timers").CallTimers(
            clock, lambda key: None
        )
        start, cancel = timers.start, timers.cancel
    else:
        each: dict[TimerKey, Any] = {}

        def cancel(key: TimerKey) -> None:
            if (timer := each.pop(key, None)) is not None:
                timer.cancel()

        def start(key: TimerKey, delay: float) -> None:
            cancel(key)
            each[key] = clock.callLater(delay, each.pop, key)

    def handle(event: ControllerEvent, now: float, at: datetime) -> list[Action]:
        actions = controller.handle(event, now, at)
        for action in actions:
            if isinstance(action, StartTimer):
                start(action.key, action.delay)
            elif isinstance(action, CancelTimer):
                cancel(action.key)
        return actions

    return handle


def calls_up(calls: int, number: Number) -> dict[str, float]:
    """Tracked objects per call up, and the median CPU time of a full collection (and the
    objects it walks) with ``calls`` calls up, their timers armed as serve's B2BUA does."""
    handle = armed(Controller(Local(), Timers()))
    for n in range(50):
        answer(handle, cast(Request, parse_message(invite(1_000_000 + n))), number, 1_000_000 + n)
    wires = [invite(n) for n in range(calls)]
    before = tracked()
    for n, wire in enumerate(wires):
        answer(handle, cast(Request, parse_message(wire)), number, n)
    per_call = (tracked() - before) / calls
    times = []
    for _ in range(7):
        started = time.process_time()
        gc.collect()
        times.append((time.process_time() - started) * 1000)
    return {
        "tracked objects per call up": per_call,
        f"tracked objects, {calls} calls up": len(gc.get_objects()),
        f"full collection, {calls} calls up (ms)": statistics.median(times),
    }


def compare(calls: int, before: Path | None) -> None:
    """Each tree's figures from a process of its own, side by side."""
    results = figures_per_tree(__file__, ["--up", str(calls)], "CONTROLLER_TREE", before)
    print(f"{'':44}" + "".join(f"{label:>12}" for label in results))
    for key in results["this"]:
        print(f"{key:44}" + "".join(f"{figures[key]:12,.1f}" for figures in results.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--up", type=int, help="calls to answer and leave up (see above)")
    parser.add_argument("--before", type=Path, help="a tree whose controller to measure first")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    calls = args.calls
    number = Number(
        new_id(), new_id(), "+441515550001", None, None, "default", {}, False,
        None, None, None, None, AT, AT,
    )  # fmt: skip
    if args.json:
        print(json.dumps(calls_up(args.up, number)))
        return
    if args.up is not None:
        compare(args.up, args.before)
        return
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
