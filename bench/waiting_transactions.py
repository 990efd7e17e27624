"""What SIP transactions waiting out RFC 3261's timers cost the garbage collector.

    python3 bench/waiting_transactions.py [--calls 5000] [--before /path/to/a/checkout/of/main]

Calls go through one ``SipEndpoint`` in memory (no sockets), as the B2BUA's do: the carrier's
INVITE answered 200 and its BYE answered 200, our INVITE to the destination answered 200 and
our BYE answered 200. Each call leaves four transactions waiting (Timers L, J, M over UDP for
32 s, K for 5 s); a failed call leaves an INVITE server transaction in Confirmed (I) and an
INVITE client one in Completed (D). Printed: the objects the cyclic collector tracks per
waiting transaction, by state (the kept URI and name-address parses, bounded caches, left out),
the CPU time of a full collection with ``--calls`` calls' transactions waiting, and the CPU a
final sent again from Completed costs.

With ``--before``, that checkout's SIP core is measured first, in a process of its own, then
this tree's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# With --before, a child process imports the SIP core of the tree named in WAITING_TREE.
sys.path.insert(0, os.environ.get("WAITING_TREE", str(ROOT)))
sys.path.insert(1, str(ROOT))  # bench.trees, whichever tree the child measures

from bench.trees import figures_per_tree  # noqa: E402
from callrouter.sip.endpoint import SipEndpoint  # noqa: E402
from callrouter.sip.events import Flow, RequestReceived  # noqa: E402
from callrouter.sip.headers import parse_name_address  # noqa: E402
from callrouter.sip.message import Request, parse_message  # noqa: E402
from callrouter.sip.uri import parse_uri  # noqa: E402
from tests.sip.messages import invite  # noqa: E402


def carrier() -> Flow:
    return Flow("udp", "192.0.2.10", 5060)  # a new one per datagram, as the transport makes


def destination() -> Flow:
    return Flow("udp", "203.0.113.5", 5060)


def settle(ep: SipEndpoint) -> list[RequestReceived]:
    """Take what the endpoint sends and reports, as the transport and the B2BUA would."""
    ep.transmissions()
    received = []
    while (event := ep.next_event()) is not None:
        if isinstance(event, RequestReceived):
            received.append(event)
    return received


def carrier_request(ep: SipEndpoint, n: int, method: str, status: int) -> None:
    request = invite(f"z9hG4bK-{method}{n}", from_tag=f"ft{n}")
    request.headers.set("Call-ID", f"{n}-8f1e2d@192.0.2.10")
    if method == "BYE":
        request.method = "BYE"
        request.headers.set("CSeq", "2 BYE")
        request.headers.set("To", f"<sip:+441515550001@198.51.100.1>;tag=rt{n}")
        request.headers.remove("content-type")
        request.body = b""
    ep.receive(request.to_bytes(), carrier(), 0.0)
    (event,) = settle(ep)
    ep.respond(event.transaction_id, event.request.response(status, to_tag=f"rt{n}"), 0.0)
    if status >= 300:  # the carrier's ACK of our refusal
        ack = Request("ACK", request.uri, request.headers.copy())
        ack.headers.set("CSeq", "1 ACK")
        ack.headers.set("To", f"{request.headers.get('to')};tag=rt{n}")
        ep.receive(ack.to_bytes(), carrier(), 0.0)
    settle(ep)


def our_request(ep: SipEndpoint, n: int, method: str, status: int) -> None:
    request = invite(from_tag=f"rf{n}")
    request.headers.pop_first("via")
    request.headers.set("Call-ID", f"out-{n}@198.51.100.1")
    if method == "BYE":
        request.method = "BYE"
        request.headers.set("CSeq", "2 BYE")
        request.headers.remove("content-type")
        request.body = b""
    flow = destination()
    ep.send_request(request, flow, 0.0)
    (sent,) = ep.transmissions()
    outbound = parse_message(sent.data)
    assert isinstance(outbound, Request)
    ep.receive(outbound.response(status, to_tag=f"dt{n}").to_bytes(), flow, 0.0)
    settle(ep)


KINDS: dict[str, Callable[[SipEndpoint, int], None]] = {
    "INVITE server, Accepted (L)": lambda ep, n: carrier_request(ep, n, "INVITE", 200),
    "BYE server, Completed (J)": lambda ep, n: carrier_request(ep, n, "BYE", 200),
    "INVITE client, Accepted (M)": lambda ep, n: our_request(ep, n, "INVITE", 200),
    "BYE client, Completed (K)": lambda ep, n: our_request(ep, n, "BYE", 200),
    "INVITE server, Confirmed (I)": lambda ep, n: carrier_request(ep, n, "INVITE", 486),
    "INVITE client, Completed (D)": lambda ep, n: our_request(ep, n, "INVITE", 486),
}
CALL = list(KINDS.values())[:4]  # what one answered call leaves waiting


def router() -> SipEndpoint:
    return SipEndpoint({"udp": "198.51.100.1:5060"}, agent="callrouter-bench")


def tracked() -> int:
    parse_uri.cache_clear()
    parse_name_address.cache_clear()
    gc.collect()
    return len(gc.get_objects())


def per_transaction(drive: Callable[[SipEndpoint, int], None], count: int = 2000) -> float:
    ep = router()
    for n in range(50):
        drive(ep, 1_000_000 + n)  # first-use allocations out of the count
    before = tracked()
    for n in range(count):
        drive(ep, n)
    return (tracked() - before) / count


def full_collection_ms(calls: int) -> tuple[float, int]:
    """Median CPU time of a full collection with ``calls`` calls' transactions waiting, and
    the objects it walked."""
    ep = router()
    for n in range(calls):
        for drive in CALL:
            drive(ep, n)
    assert ep.transaction_count == 4 * calls
    times = []
    for _ in range(7):
        started = time.process_time()
        gc.collect()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times), len(gc.get_objects())


def answered_again_us(count: int = 5000) -> tuple[float, float]:
    """CPU per final a server transaction in Completed sends again (median of 3 rounds): on
    Timer G (INVITE refused 486: the send alone) and for a retransmitted BYE (its parse and
    matching included)."""
    ep = router()
    byes = []
    for n in range(count):
        request = invite(f"z9hG4bK-g{n}", from_tag=f"fg{n}")
        ep.receive(request.to_bytes(), carrier(), 0.0)
        (event,) = settle(ep)
        ep.respond(event.transaction_id, event.request.response(486, to_tag="rt"), 0.0)
        bye = invite(f"z9hG4bK-bye{n}", from_tag=f"fb{n}")
        bye.method = "BYE"
        bye.headers.set("CSeq", "2 BYE")
        bye.headers.set("To", "<sip:+441515550001@198.51.100.1>;tag=rt")
        bye.headers.remove("content-type")
        bye.body = b""
        ep.receive(bye.to_bytes(), carrier(), 0.0)
        (event,) = settle(ep)
        ep.respond(event.transaction_id, event.request.response(200), 0.0)
        byes.append(bye.to_bytes())
    settle(ep)
    timer_g, again = [], []
    for now in (0.5, 1.5, 3.5):  # Timer G: T1, then doubling
        started = time.process_time()
        ep.handle_timers(now)
        timer_g.append((time.process_time() - started) / len(ep.transmissions()) * 1e6)
        started = time.process_time()
        for data in byes:
            ep.receive(data, carrier(), now)
        again.append((time.process_time() - started) / len(ep.transmissions()) * 1e6)
    return statistics.median(timer_g), statistics.median(again)


def measure(calls: int) -> dict[str, float]:
    figures = {kind: per_transaction(drive) for kind, drive in KINDS.items()}
    idle, idle_objects = full_collection_ms(0)
    busy, busy_objects = full_collection_ms(calls)
    timer_g, again = answered_again_us()
    figures |= {
        "full collection, nothing waiting (ms)": idle,
        "tracked objects, nothing waiting": idle_objects,
        f"full collection, {4 * calls} transactions waiting (ms)": busy,
        f"tracked objects, {4 * calls} transactions waiting": busy_objects,
        "CPU per 486 sent again on Timer G (us)": timer_g,
        "CPU per retransmitted BYE answered again (us)": again,
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--before", type=Path, help="a checkout whose SIP core to measure first")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.calls)))
        return
    results = figures_per_tree(__file__, ["--calls", str(args.calls)], "WAITING_TREE", args.before)
    print(f"{'':64}" + "".join(f"{label:>12}" for label in results))
    for key in results["this"]:
        row = "".join(f"{figures[key]:12,.1f}" for figures in results.values())
        name = f"tracked objects per transaction, {key}" if key in KINDS else key
        print(f"{name:64}{row}")


if __name__ == "__main__":
    main()
