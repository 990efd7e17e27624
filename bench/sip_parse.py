"""SIP core throughput: parse+serialise messages/s against twisted.protocols.sip on the same
corpus in the same run, and transactions/s through the sans-IO core with an in-memory transport.

    python3 bench/sip_parse.py [--seconds 3] [--before /path/to/a/checkout/of/main] [--rounds 3]

With ``--before``, that checkout's SIP core and this one's take turns (``--rounds`` each, one
process per turn, the same corpus bytes) and each turn prints the CPU per message (process
time, not wall time: the machine is shared) of parse+serialise, and of parse + the fields a
transaction reads (top Via, From/To tags, CSeq, Call-ID) + serialise.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A turn of --before imports the SIP core of the tree named in SIP_PARSE_TREE instead of ours.
sys.path.insert(0, os.environ.get("SIP_PARSE_TREE", str(ROOT)))

from callrouter.sip.endpoint import SipEndpoint  # noqa: E402
from callrouter.sip.events import Flow, RequestReceived, ResponseReceived  # noqa: E402
from callrouter.sip.message import Request, parse_message  # noqa: E402
from tests.sip.messages import SDP, invite, options  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.protocols import sip as twisted_sip


def corpus(calls: int = 2000) -> list[bytes]:
    """Realistic carrier traffic: INVITEs with SDP, their 100/180/200, BYE and OPTIONS, for
    ``calls`` calls, each with its own Call-ID, tags and branches as a carrier's calls have
    (the core keeps the parses of values that repeat, such as URIs: one call cycled would
    flatter it; 2,000 calls hold more distinct values than it keeps, so a value comes back
    from the cache only within its own call, or when every call has it)."""
    one = one_call()
    return [
        message.replace(b"8f1e2d@", f"{n}-8f1e2d@".encode())
        .replace(b"tag=ft1", f"tag=ft{n}".encode())
        .replace(b"tag=as7d9", f"tag=as{n}".encode())
        .replace(b"branch=z9hG4bK-", f"branch=z9hG4bK-{n}-".encode())
        .replace(b"ping-1@", f"ping-{n}@".encode())
        .replace(b"tag=p1", f"tag=p{n}".encode())
        for n in range(calls)
        for message in one
    ]


def one_call() -> list[bytes]:
    request = invite()
    request.headers.add("Record-Route", "<sip:192.0.2.20;lr>")
    request.headers.add("P-Asserted-Identity", "<sip:+447700900123@192.0.2.10;user=phone>")
    request.headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK")
    request.headers.add("Supported", "100rel, timer, replaces")
    ok = request.response(200, to_tag="as7d9")
    ok.headers.add("Contact", "<sip:desk@203.0.113.5:5060>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = SDP
    bye = Request("BYE", "sip:desk@203.0.113.5:5060", ok.headers.copy())
    bye.headers.set("CSeq", "2 BYE")
    bye.headers.remove("content-type")
    bye.body = b""
    return [
        request.to_bytes(),
        request.response(100).to_bytes(),
        request.response(180, to_tag="as7d9").to_bytes(),
        ok.to_bytes(),
        bye.to_bytes(),
        options().to_bytes(),
    ]


def rate(work: Callable[[bytes], object], messages: list[bytes], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    for message in itertools.cycle(messages):
        work(message)
        done += 1
        if done % 500 == 0 and time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - start)


def ours(data: bytes) -> bytes:
    return parse_message(data).to_bytes()


def twisted(data: bytes) -> bytes:
    parsed: list[twisted_sip.Message] = []
    parser = twisted_sip.MessagesParser(parsed.append)
    parser.dataReceived(data)
    parser.dataDone()
    return parsed[0].toString()


def transactions_per_second(seconds: float) -> float:
    """OPTIONS transactions between two endpoints, all in memory: send, answer, receive."""
    uac = SipEndpoint({"udp": "192.0.2.10:5060"})
    uas = SipEndpoint({"udp": "198.51.100.1:5060"})
    to_uas, to_uac = Flow("udp", "198.51.100.1", 5060), Flow("udp", "192.0.2.10", 5060)
    done = 0
    start = time.perf_counter()
    now = 0.0
    while True:
        request = options()
        request.headers.pop_first("via")
        uac.send_request(request, to_uas, now)
        for t in uac.transmissions():
            uas.receive(t.data, to_uac, now)
        while (event := uas.next_event()) is not None:
            if isinstance(event, RequestReceived):
                uas.respond(event.transaction_id, event.request.response(200, to_tag="b"), now)
        for t in uas.transmissions():
            uac.receive(t.data, to_uas, now)
        while (event := uac.next_event()) is not None:
            done += isinstance(event, ResponseReceived)
        now += 0.001
        uac.handle_timers(now + 64)  # let Timer K/J retire transactions as a server would
        uas.handle_timers(now + 64)
        if done % 200 == 0 and time.perf_counter() - start >= seconds:
            return done / (time.perf_counter() - start)


def read_fields(data: bytes) -> bytes:
    """What a message costs the transaction layer: parse, the fields matching reads, serialise."""
    message = parse_message(data)
    _ = (message.top_via.branch, message.from_.tag, message.to.tag, message.cseq, message.call_id)
    return message.to_bytes()


def cpu_per_message(
    work: Callable[[bytes], object], messages: list[bytes], seconds: float
) -> float:
    """Microseconds of this process's CPU per message."""
    done = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        for message in messages:
            work(message)
        done += len(messages)
    return (time.process_time() - started) / done * 1e6


def turn(corpus_file: Path, seconds: float) -> None:
    """One turn of --before, in its own process: print the CPU figures as one line."""
    messages = [bytes.fromhex(line) for line in corpus_file.read_text().split()]
    print(
        f"{cpu_per_message(ours, messages, seconds):.2f} "
        f"{cpu_per_message(read_fields, messages, seconds):.2f}"
    )


def alternate(before: Path, rounds: int, seconds: float) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".hex") as file:
        file.write("\n".join(m.hex() for m in corpus()))
        file.flush()
        figures: dict[str, list[tuple[float, float]]] = {"before": [], "this": []}
        for n in range(rounds):
            for label, tree in (("before", before.resolve()), ("this", ROOT)):
                line = subprocess.run(
                    [sys.executable, __file__, "--turn", file.name, "--seconds", str(seconds)],
                    env={**os.environ, "SIP_PARSE_TREE": str(tree)},
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                whole, fields = float(line[0]), float(line[1])
                figures[label].append((whole, fields))
                load = os.getloadavg()[0]
                print(
                    f"round {n + 1} {label:6}: parse+serialise {whole:6.2f} us/message, "
                    f"+ transaction fields {fields:6.2f} us/message (load {load:.1f})"
                )
    for i, what in enumerate(("parse+serialise", "parse + transaction fields + serialise")):
        was = statistics.median(f[i] for f in figures["before"])
        now = statistics.median(f[i] for f in figures["this"])
        print(f"{what}, median: before {was:.2f} us, this {now:.2f} us: ratio {now / was:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--before", type=Path, help="a checkout whose SIP core to alternate with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turn", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turn is not None:
        turn(args.turn, args.seconds)
        return
    if args.before is not None:
        alternate(args.before, args.rounds, args.seconds)
        return
    messages = corpus()
    for data in messages:
        assert ours(data) and twisted(data)
    ours_rate = rate(ours, messages, args.seconds)
    twisted_rate = rate(twisted, messages, args.seconds)
    print(f"corpus: {len(messages)} messages, {sum(map(len, messages))} bytes")
    print(f"parse+serialise, callrouter.sip:        {ours_rate:10,.0f} messages/s")
    print(f"parse+serialise, twisted.protocols.sip: {twisted_rate:10,.0f} messages/s")
    print(f"ratio callrouter/twisted: {ours_rate / twisted_rate:.2f}")
    print(
        f"transactions through the core (OPTIONS, in memory): "
        f"{transactions_per_second(args.seconds):,.0f}/s"
    )


if __name__ == "__main__":
    main()
