"""Transactions that only wait out RFC 3261's timers (J, L, M, D, K, I, and G/H in Completed)
keep the bytes they may send again, not the parsed messages, and still answer as before.

Thousands of them wait at once under load (a call leaves four for 32 s over UDP), and a full
garbage collection walks every object each one holds: in serve at 100 calls/s of 60 s calls
that was ~411,000 tracked objects and a 207 ms pause.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from itertools import count

import pytest

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import (
    Event,
    Flow,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
)
from callrouter.sip.headers import Headers, parse_name_address
from callrouter.sip.message import Request, Response, parse_message
from callrouter.sip.transactions import (
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
    State,
    Timers,
    Transaction,
)
from callrouter.sip.uri import parse_uri
from tests.sip.messages import answer, invite, options
from tests.tracked import reachable

TIMERS = Timers()
ROUTER = "198.51.100.1:5060"


def carrier() -> Flow:
    # A new Flow per datagram, as the UDP transport makes them.
    return Flow("udp", "192.0.2.10", 5060)


def destination() -> Flow:
    return Flow("udp", "203.0.113.5", 5060)


def bye(branch: str, n: int = 1) -> Request:
    """The carrier's BYE for call ``n``."""
    request = invite(branch, cseq=2, from_tag=f"ft{n}")
    request.method = "BYE"
    request.headers.set("CSeq", "2 BYE")
    request.headers.set("To", f"<sip:+441515550001@198.51.100.1>;tag=rt{n}")
    request.headers.set("Call-ID", f"{n}-8f1e2d@192.0.2.10")
    request.headers.remove("content-type")
    request.body = b""
    return request


def ack_of(request: Request, to_tag: str) -> Request:
    """The peer's ACK for a non-2xx final to ``request`` (same branch, §17.1.1.3)."""
    ack = Request("ACK", request.uri, request.headers.copy())
    ack.headers.set("CSeq", f"{request.cseq.number} ACK")
    ack.headers.set("To", f"{request.headers.get('to')};tag={to_tag}")
    ack.headers.remove("content-type")
    return ack


# -- nothing parsed is held ------------------------------------------------------------------------


def drained(tx: Transaction) -> Transaction:
    """What the endpoint does after each input: take the sends and events away."""
    tx.outgoing.clear()
    tx.events.clear()
    return tx


def client_invite_accepted() -> Transaction:
    request = invite()
    tx = ClientInvite("c", request, False, TIMERS)
    tx.start(0.0)
    tx.receive_response(answer(request, 180), 0.1)
    tx.receive_response(answer(request, 200), 0.2)
    assert tx.receive_response(answer(request, 200), 0.7)  # a 2xx again still goes up
    return tx


def client_invite_completed() -> Transaction:
    request = invite()
    tx = ClientInvite("c", request, False, TIMERS)
    tx.start(0.0)
    tx.receive_response(answer(request, 486), 0.2)
    tx.receive_response(answer(request, 486), 0.7)
    return tx


def client_non_invite_completed() -> Transaction:
    request = options()
    tx = ClientNonInvite("c", request, False, TIMERS)
    tx.start(0.0)
    tx.receive_response(answer(request, 200), 0.2)
    return tx


def server_invite_accepted() -> Transaction:
    request = invite()
    tx = ServerInvite("s", request, False, TIMERS)
    tx.start(0.0)
    tx.respond(answer(request, 180), 0.1)
    tx.respond(answer(request, 200), 0.2)
    tx.respond(answer(request, 200), 0.7)  # the dialog layer's retransmission of its 2xx
    tx.receive_request(invite(), 0.8)
    return tx


def server_invite_completed() -> Transaction:
    request = invite()
    tx = ServerInvite("s", request, False, TIMERS)
    tx.start(0.0)
    tx.respond(answer(request, 486), 0.2)
    tx.handle_timer(0.7)  # Timer G
    tx.receive_request(invite(), 0.8)
    return tx


def server_invite_confirmed() -> Transaction:
    tx = server_invite_completed()
    tx.receive_request(ack_of(invite(), "tt1"), 0.9)
    return tx


def server_non_invite_completed() -> Transaction:
    request = options()
    tx = ServerNonInvite("s", request, False, TIMERS)
    tx.start(0.0)
    tx.respond(answer(request, 100), 0.1)
    tx.respond(answer(request, 200), 0.2)
    tx.receive_request(options(), 0.3)
    return tx


WAITING: dict[str, tuple[Callable[[], Transaction], State, str]] = {
    "ClientInvite Accepted": (client_invite_accepted, State.ACCEPTED, "M"),
    "ClientInvite Completed": (client_invite_completed, State.COMPLETED, "D"),
    "ClientNonInvite Completed": (client_non_invite_completed, State.COMPLETED, "K"),
    "ServerInvite Accepted": (server_invite_accepted, State.ACCEPTED, "L"),
    "ServerInvite Completed": (server_invite_completed, State.COMPLETED, "G"),
    "ServerInvite Confirmed": (server_invite_confirmed, State.CONFIRMED, "I"),
    "ServerNonInvite Completed": (server_non_invite_completed, State.COMPLETED, "J"),
}


@pytest.mark.parametrize("name", WAITING)
def test_a_waiting_transaction_holds_no_parsed_message(name: str) -> None:
    make, state, timer = WAITING[name]
    tx = drained(make())
    assert tx.state is state and timer in tx.armed_timers
    held = {type(item).__name__ for item in reachable(tx)}
    assert held.isdisjoint({"Request", "Response", "Headers", "Via", "NameAddress", "CSeq"})
    assert tx.request is None and tx.last_response is None


# -- what goes again is what went first ------------------------------------------------------------


def router() -> SipEndpoint:
    # An agent, so the Server field is stamped: it must be in the first bytes and the repeats.
    tokens = count(1)
    return SipEndpoint(
        {"udp": ROUTER}, TIMERS, agent="callrouter-test", new_token=lambda: f"r{next(tokens)}"
    )


def sent(ep: SipEndpoint) -> list[bytes]:
    return [t.data for t in ep.transmissions()]


def statuses(ep: SipEndpoint) -> list[int]:
    return [m.status for m in map(parse_message, sent(ep)) if isinstance(m, Response)]


def events(ep: SipEndpoint) -> list[Event]:
    out = []
    while (event := ep.next_event()) is not None:
        out.append(event)
    return out


def received(ep: SipEndpoint) -> RequestReceived:
    (event,) = [e for e in events(ep) if isinstance(e, RequestReceived)]
    return event


def test_a_retransmitted_request_in_completed_gets_the_same_bytes_and_is_counted() -> None:
    ep = router()
    request = bye("z9hG4bK-bye-1")
    ep.receive(request.to_bytes(), carrier(), 0.0)
    ep.respond(received(ep).transaction_id, request.response(200), 0.1)
    (first,) = sent(ep)
    assert b"\r\nServer: callrouter-test\r\n" in first
    ep.receive(request.to_bytes(), carrier(), 1.0)
    ep.receive(request.to_bytes(), carrier(), 2.0)
    assert sent(ep) == [first, first]
    assert events(ep) == []
    assert ep.counters.responses[200] == 3 and ep.counters.retransmissions == 2
    assert ep.counters.requests["BYE"] == 3


def test_an_invite_error_goes_again_on_timer_g_and_for_retransmissions_until_the_ack() -> None:
    ep = router()
    request = invite("z9hG4bK-busy")
    ep.receive(request.to_bytes(), carrier(), 0.0)
    tid = received(ep).transaction_id
    sent(ep)  # the 100
    ep.respond(tid, request.response(486, to_tag="rt1"), 0.1)
    (first,) = sent(ep)
    assert parse_message(first).headers.get("server") == "callrouter-test"
    ep.handle_timers(0.6)  # Timer G: T1 after the 486
    ep.receive(request.to_bytes(), carrier(), 0.7)
    assert sent(ep) == [first, first]
    ep.receive(ack_of(request, "rt1").to_bytes(), carrier(), 0.8)
    ep.receive(request.to_bytes(), carrier(), 0.9)  # Confirmed absorbs it, sends nothing
    assert sent(ep) == [] and events(ep) == []
    assert ep.counters.responses[486] == 3 and ep.counters.retransmissions == 3


def test_a_retransmitted_error_response_gets_the_same_ack_and_goes_up_once() -> None:
    ep = router()
    request = invite()
    request.headers.pop_first("via")
    tid = ep.send_request(request, destination(), 0.0)
    (data,) = sent(ep)
    outbound = parse_message(data)
    assert isinstance(outbound, Request)
    refusal = outbound.response(486, to_tag="dt1").to_bytes()
    ep.receive(refusal, destination(), 0.1)
    (ack,) = sent(ep)
    assert ack.startswith(b"ACK ") and b";tag=dt1\r\n" in ack
    ep.receive(refusal, destination(), 0.6)
    ep.receive(refusal, destination(), 1.6)
    assert sent(ep) == [ack, ack]
    responses = [e for e in events(ep) if isinstance(e, ResponseReceived)]
    assert [(e.transaction_id, e.response.status) for e in responses] == [(tid, 486)]


def test_2xx_retransmissions_in_accepted_still_go_up_for_the_dialog_to_ack() -> None:
    ep = router()
    request = invite()
    request.headers.pop_first("via")
    tid = ep.send_request(request, destination(), 0.0)
    (data,) = sent(ep)
    outbound = parse_message(data)
    assert isinstance(outbound, Request)
    ok = outbound.response(200, to_tag="dt1").to_bytes()
    for now in (0.1, 0.6, 1.6):
        ep.receive(ok, destination(), now)
    responses = [e for e in events(ep) if isinstance(e, ResponseReceived)]
    assert [(e.transaction_id, e.response.status) for e in responses] == [(tid, 200)] * 3
    assert sent(ep) == []  # the transaction never ACKs a 2xx (§17.1.1.3)


def test_the_merge_table_forgets_a_request_whose_transaction_ended() -> None:
    """§8.2.2.2's table holds an out-of-dialog request's (From tag, Call-ID, CSeq) until its
    transaction ends, although the transaction let the request go when it was answered."""
    ep = router()
    tcp = Flow("tcp", "192.0.2.10", 40000)
    first = options("z9hG4bK-path-a")
    ep.receive(first.to_bytes(), tcp, 0.0)
    ep.respond(received(ep).transaction_id, first.response(200, to_tag="rt1"), 0.0)
    sent(ep)
    ep.receive(options("z9hG4bK-path-b").to_bytes(), carrier(), 0.0)  # J not yet run
    assert statuses(ep) == [482]
    ep.handle_timers(0.0)  # J is 0 over TCP: the first transaction ends
    assert sum(isinstance(e, TransactionTerminated) for e in events(ep)) == 1
    ep.receive(options("z9hG4bK-path-c").to_bytes(), carrier(), 0.1)
    assert received(ep).request.top_via.branch == "z9hG4bK-path-c"
    assert sent(ep) == []  # no 482: it waits for the layer above's answer


# -- what a waiting transaction costs the collector ------------------------------------------------


def inbound_call(ep: SipEndpoint, n: int) -> None:
    """The carrier's side of a call through the router: INVITE answered 200, then its BYE
    answered 200 (a ServerInvite in Accepted, a ServerNonInvite in Completed)."""
    request = invite(f"z9hG4bK-c{n}", from_tag=f"ft{n}")
    request.headers.set("Call-ID", f"{n}-8f1e2d@192.0.2.10")
    ep.receive(request.to_bytes(), carrier(), 0.0)
    ep.respond(received(ep).transaction_id, request.response(200, to_tag=f"rt{n}"), 0.0)
    ending = bye(f"z9hG4bK-b{n}", n)
    ep.receive(ending.to_bytes(), carrier(), 0.0)
    ep.respond(received(ep).transaction_id, ending.response(200), 0.0)
    ep.transmissions()
    events(ep)


def outbound_call(ep: SipEndpoint, n: int) -> None:
    """The destination's side: our INVITE answered 200, our BYE answered 200 (a ClientInvite
    in Accepted, a ClientNonInvite in Completed)."""
    flow = destination()
    for method in ("INVITE", "BYE"):
        request = invite(from_tag=f"rf{n}")
        request.headers.pop_first("via")
        request.headers.set("Call-ID", f"out-{n}@198.51.100.1")
        if method == "BYE":
            request.method = "BYE"
            request.headers.set("CSeq", "2 BYE")
            request.headers.remove("content-type")
            request.body = b""
        ep.send_request(request, flow, 0.0)
        (data,) = sent(ep)
        outbound = parse_message(data)
        assert isinstance(outbound, Request)
        ep.receive(outbound.response(200, to_tag=f"dt{n}").to_bytes(), flow, 0.0)
        ep.transmissions()
        events(ep)


def tracked_objects() -> int:
    # The kept URI and name-address parses are bounded caches, not the transactions' cost.
    parse_uri.cache_clear()
    parse_name_address.cache_clear()
    gc.collect()
    return len(gc.get_objects())


def test_a_waiting_transaction_costs_the_collector_a_handful_of_objects() -> None:
    """At most 5 tracked objects per waiting transaction: the transaction, its two output
    lists (empty between inputs), the Flow its messages go to (a new one per datagram, as
    the transport makes them) and, in the states that may send again, one Wire of bytes.
    Holding its request and responses, a transaction cost 28-35 (the parsed messages: the
    Request, its Headers with their lists and dicts, Via, NameAddress, CSeq, URIs)."""
    ep = router()
    calls = 500
    for n in range(20):
        inbound_call(ep, 10_000 + n)  # first-use allocations out of the count
        outbound_call(ep, 10_000 + n)
    before = tracked_objects()
    for n in range(calls):
        inbound_call(ep, n)
        outbound_call(ep, n)
    after = tracked_objects()
    waiting = 4 * calls
    assert ep.transaction_count == waiting + 4 * 20
    assert (after - before) / waiting <= 5
    # And once their timers have run, nothing of them is left.
    ep.handle_timers(64 * TIMERS.t1)
    events(ep)
    assert ep.transaction_count == 0
    assert tracked_objects() <= before


def test_the_endpoint_keeps_no_parsed_message_for_its_waiting_transactions() -> None:
    ep = router()
    inbound_call(ep, 1)
    outbound_call(ep, 1)
    assert ep.transaction_count == 4
    held = [o for o in reachable(ep) if isinstance(o, Request | Response | Headers)]
    assert held == []
