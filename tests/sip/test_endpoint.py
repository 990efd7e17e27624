"""The transaction layer as a UAC/UAS pair pumped through memory, with losses injected."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import (
    AckReceived,
    CancelReceived,
    Event,
    Flow,
    MessageRejected,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from callrouter.sip.message import Limits, Request, Response, parse_message
from callrouter.sip.transactions import Timers
from tests.sip.messages import invite, options

CARRIER = Flow("udp", "192.0.2.10", 5060)
ROUTER = Flow("udp", "198.51.100.1", 5060)


def tokens(prefix: str) -> Callable[[], str]:
    numbers = count(1)
    return lambda: f"{prefix}{next(numbers)}"


def router() -> SipEndpoint:
    return SipEndpoint({"udp": "198.51.100.1:5060"}, Timers(), new_token=tokens("r"))


def events(endpoint: SipEndpoint) -> list[Event]:
    out = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def sent(endpoint: SipEndpoint) -> list[tuple[Request | Response, Flow]]:
    return [(parse_message(t.data), t.flow) for t in endpoint.transmissions()]


def test_invite_gets_100_at_once_and_a_retransmission_is_absorbed() -> None:
    ep = router()
    data = invite().to_bytes()
    ep.receive(data, CARRIER, 0.0)
    ((trying, flow),) = sent(ep)
    assert isinstance(trying, Response) and trying.status == 100 and flow == CARRIER
    (received,) = events(ep)
    assert isinstance(received, RequestReceived) and received.request.method == "INVITE"
    ep.receive(data, CARRIER, 0.4)
    assert [m.status for m, _ in sent(ep) if isinstance(m, Response)] == [100]
    assert events(ep) == []


def test_response_goes_to_the_source_address_when_rport_asks_for_it() -> None:
    ep = router()
    natted = Flow("udp", "203.0.113.7", 40123)
    ep.receive(invite().to_bytes(), natted, 0.0)
    ((trying, flow),) = sent(ep)
    assert flow == natted
    assert "received=203.0.113.7" in (trying.headers.get("via") or "")
    assert "rport=40123" in (trying.headers.get("via") or "")


def test_cancel_is_answered_and_reported_then_487_and_ack_close_the_invite() -> None:
    ep = router()
    request = invite()
    ep.receive(request.to_bytes(), CARRIER, 0.0)
    (received,) = events(ep)
    assert isinstance(received, RequestReceived)
    sent(ep)
    cancel = Request("CANCEL", request.uri, request.headers.copy())
    cancel.headers.set("CSeq", "1 CANCEL")
    cancel.headers.remove("content-type")
    ep.receive(cancel.to_bytes(), CARRIER, 1.0)
    ((ok, _),) = sent(ep)
    assert isinstance(ok, Response) and (ok.status, ok.cseq.method) == (200, "CANCEL")
    (cancelled,) = events(ep)
    assert isinstance(cancelled, CancelReceived)
    assert cancelled.invite_transaction_id == received.transaction_id
    ep.respond(received.transaction_id, request.response(487, to_tag="t9"), 1.0)
    assert [m.status for m, _ in sent(ep) if isinstance(m, Response)] == [487]
    ack = Request("ACK", request.uri, request.headers.copy())
    ack.headers.set("CSeq", "1 ACK")
    ack.headers.set("To", "<sip:+441515550001@198.51.100.1>;tag=t9")
    ep.receive(ack.to_bytes(), CARRIER, 1.1)
    assert events(ep) == []  # absorbed by the INVITE transaction (Confirmed)


def test_cancel_for_an_unknown_invite_gets_481() -> None:
    ep = router()
    cancel = invite("z9hG4bK-nothing")
    cancel.method = "CANCEL"
    cancel.headers.set("CSeq", "1 CANCEL")
    cancel.body = b""
    cancel.headers.remove("content-type")
    ep.receive(cancel.to_bytes(), CARRIER, 0.0)
    ((response, _),) = sent(ep)
    assert isinstance(response, Response) and response.status == 481


def test_a_merged_request_arriving_by_another_path_gets_482() -> None:
    ep = router()
    ep.receive(invite("z9hG4bK-path-a").to_bytes(), CARRIER, 0.0)
    sent(ep)
    events(ep)
    ep.receive(invite("z9hG4bK-path-b").to_bytes(), Flow("udp", "192.0.2.11", 5060), 0.1)
    statuses = [m.status for m, _ in sent(ep) if isinstance(m, Response)]
    assert statuses == [100, 482]
    assert events(ep) == []


def test_ack_for_a_2xx_goes_up_to_the_dialog_layer() -> None:
    ep = router()
    request = invite()
    ep.receive(request.to_bytes(), CARRIER, 0.0)
    (received,) = events(ep)
    assert isinstance(received, RequestReceived)
    ep.respond(received.transaction_id, request.response(200, to_tag="t1"), 0.5)
    ack = invite("z9hG4bK-ack-branch")
    ack.method = "ACK"
    ack.headers.set("CSeq", "1 ACK")
    ep.receive(ack.to_bytes(), CARRIER, 0.6)
    (event,) = events(ep)
    assert isinstance(event, AckReceived)


def test_garbage_with_a_readable_via_is_answered_400_with_a_reason() -> None:
    ep = router()
    data = options().to_bytes().replace(b"Content-Length: 0", b"Content-Length: 99")
    ep.receive(data, CARRIER, 0.0)
    ((response, _),) = sent(ep)
    assert isinstance(response, Response) and response.status == 400
    assert "Content-Length larger than the body" in (response.headers.get("warning") or "")
    assert "Server" not in response.headers
    (event,) = events(ep)
    assert isinstance(event, MessageRejected) and event.status == 400


def test_garbage_without_a_via_is_dropped() -> None:
    ep = router()
    ep.receive(b"\x00\x01 hello\r\n\r\n", CARRIER, 0.0)
    assert sent(ep) == []
    (event,) = events(ep)
    assert isinstance(event, MessageRejected) and event.status is None


def pump(a: SipEndpoint, b: SipEndpoint, now: float, drop: Callable[[bytes], bool]) -> None:
    """Deliver everything in flight both ways until quiet, dropping what ``drop`` picks."""
    for _ in range(100):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for t in src.transmissions():
                moved = True
                if not drop(t.data):
                    dst.receive(t.data, ROUTER if src is a else CARRIER, now)
        if not moved:
            return
    raise AssertionError("pump did not settle")


def test_a_pair_completes_options_over_loss_with_the_timers_doing_the_work() -> None:
    uac = SipEndpoint({"udp": "192.0.2.10:5060"}, Timers(), new_token=tokens("c"))
    uas = router()
    request = options()
    request.headers.pop_first("via")
    tid = uac.send_request(request, ROUTER, 0.0)
    losses = {"requests": 2}

    def drop_first_two_requests(data: bytes) -> bool:
        if data.startswith(b"OPTIONS") and losses["requests"]:
            losses["requests"] -= 1
            return True
        return False

    now = 0.0
    answered: list[ResponseReceived] = []
    for _ in range(20):
        pump(uac, uas, now, drop_first_two_requests)
        for event in events(uas):
            if isinstance(event, RequestReceived):
                uas.respond(event.transaction_id, event.request.response(200, to_tag="u"), now)
        pump(uac, uas, now, drop_first_two_requests)
        answered += [e for e in events(uac) if isinstance(e, ResponseReceived)]
        if answered:
            break
        deadline = uac.next_deadline()
        assert deadline is not None
        now = deadline
        uac.handle_timers(now)
    assert [(e.transaction_id, e.response.status) for e in answered] == [(tid, 200)]
    assert now == 1.5  # sent at 0, lost; 0.5, lost; 1.5 arrives


def test_an_unanswered_invite_times_out_and_leaves_no_transaction() -> None:
    uac = SipEndpoint({"udp": "192.0.2.10:5060"}, Timers(), new_token=tokens("c"))
    request = invite()
    request.headers.pop_first("via")
    uac.send_request(request, ROUTER, 0.0)
    seen: list[Event] = []
    for _ in range(50):
        deadline = uac.next_deadline()
        if deadline is None:
            break
        uac.handle_timers(deadline)
        seen += events(uac)
    assert TransactionTimedOut("c1|INVITE".replace("c1", "z9hG4bKc1"), "INVITE") in seen
    assert uac.transaction_count == 0 and uac.next_deadline() is None


def test_the_sent_by_given_with_a_request_goes_into_its_via_with_rport() -> None:
    """The transport computes the address to advertise (NAT, a wildcard bind); the core only
    writes what it is given, and falls back to its per-transport table without one."""
    uac = SipEndpoint({"udp": "198.51.100.130:5060"}, Timers(), new_token=tokens("c"))
    for sent_by, expected in [("203.0.113.5:5060", "203.0.113.5"), (None, "198.51.100.130")]:
        request = options()
        request.headers.pop_first("via")
        uac.send_request(request, CARRIER, 0.0, sent_by=sent_by)
        (sent,) = uac.transmissions()
        via = parse_message(sent.data).top_via
        assert (via.host, via.port, "rport" in via.params) == (expected, 5060, True)


def test_a_transport_failure_ends_the_waiting_transactions_on_that_flow_with_503() -> None:
    """§8.1.3.1, §17.1.4: a connection that cannot be made (refused, TLS peer not verified) is
    a 503 for the requests that waited for it, now, not after Timer B; no ACK goes anywhere."""
    uac = SipEndpoint({"tls": "192.0.2.10:5061"}, Timers(), new_token=tokens("c"))
    failed = Flow("tls", "198.51.100.1", 5061, server_name="pbx.example.test")
    elsewhere = Flow("tls", "198.51.100.1", 5061, server_name="other.example.test")
    tids = []
    for flow, request in [(failed, invite()), (failed, options()), (elsewhere, options())]:
        request.headers.pop_first("via")
        tids.append(uac.send_request(request, flow, 0.0))
    uac.transmissions()
    uac.transport_failed(failed, "TLS peer refused (its certificate does not name it)", 0.1)
    answered = [e for e in events(uac) if isinstance(e, ResponseReceived)]
    assert [(e.transaction_id, e.response.status, e.flow) for e in answered] == [
        (tids[0], 503, failed),
        (tids[1], 503, failed),
    ]
    assert answered[0].response.reason == "TLS peer refused (its certificate does not name it)"
    assert answered[0].response.cseq.method == "INVITE"
    assert uac.transmissions() == []
    assert uac.transaction_count == 1  # the request on the other name still waits
    uac.transport_failed(failed, "again", 0.2)
    assert events(uac) == []


def test_a_request_over_max_headers_gets_513_and_a_response_over_it_is_dropped() -> None:
    ep = SipEndpoint({"udp": "198.51.100.1:5060"}, Timers(), Limits(max_headers=20))
    head, _, _ = invite().to_bytes().partition(b"\r\n\r\n")
    crowded = head + b"".join(b"\r\nX-Filler-%d: x" % i for i in range(20)) + b"\r\n\r\n"
    ep.receive(crowded, CARRIER, 0.0)
    ((refusal, flow),) = sent(ep)
    assert isinstance(refusal, Response) and refusal.status == 513 and flow == CARRIER
    assert refusal.reason == "Message Too Large"
    assert "too many header fields" in (refusal.headers.get("warning") or "")
    (rejected,) = events(ep)
    assert isinstance(rejected, MessageRejected) and rejected.status == 513

    answer = b"SIP/2.0 200 OK" + crowded[crowded.index(b"\r\n") :]
    ep.receive(answer, CARRIER, 0.1)
    assert sent(ep) == []
