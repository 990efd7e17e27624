"""SIP core throughput: parse+serialise messages/s against twisted.protocols.sip on the same
corpus in the same run, and transactions/s through the sans-IO core with an in-memory transport.

    python3 bench/sip_parse.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.sip.endpoint import SipEndpoint  # noqa: E402
from callrouter.sip.events import Flow, RequestReceived, ResponseReceived  # noqa: E402
from callrouter.sip.message import Request, parse_message  # noqa: E402
from tests.sip.messages import SDP, invite, options  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.protocols import sip as twisted_sip


def corpus() -> list[bytes]:
    """Realistic carrier traffic: INVITEs with SDP, their 100/180/200, ACK, BYE, OPTIONS."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
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
