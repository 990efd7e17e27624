"""Admission at the endpoint: stateless single refusals, per-method rates and pike bans.

The policy runs inside a real ``SipEndpoint``, fed datagrams as a transport would, so every
assertion is about what goes on the wire and which transactions exist.
"""

from __future__ import annotations

import pytest

from callrouter.ip_networks import parse_networks
from callrouter.routing.source_policy import MethodRate, SourcePolicy, parse_method_rates
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Flow, MessageRejected, RequestReceived
from callrouter.sip.message import Request, Response, parse_message
from callrouter.sip.pike import FloodLimit, Pike
from callrouter.sip.transactions import Timers
from tests.sip.messages import invite, options

CARRIER = Flow("udp", "192.0.2.10", 5060)
STRANGER = Flow("udp", "203.0.113.66", 5060)
DESTINATION = Flow("udp", "198.51.100.77", 5060)


def policy(*, drop: bool = False, **changes: object) -> SourcePolicy:
    settings: dict[str, object] = {
        "rate": MethodRate(50.0, 200.0),
        "strict": FloodLimit(16, 2.0),
        "carrier": FloodLimit(4000, 2.0),
        "method_rates": {"OPTIONS": MethodRate(10.0, 50.0)},
        **changes,
    }
    return SourcePolicy(
        TrunkTable(Trunk("config", parse_networks("192.0.2.0/24"))),
        pike=Pike(300.0),
        drop_unknown=drop,
        **settings,  # type: ignore[arg-type]
    )


def endpoint(admission: SourcePolicy, agent: str = "") -> SipEndpoint:
    return SipEndpoint({"udp": "198.51.100.1:5060"}, Timers(), admission=admission, agent=agent)


def sent(ep: SipEndpoint) -> list[Response]:
    out = [parse_message(t.data) for t in ep.transmissions()]
    assert all(isinstance(m, Response) for m in out)
    return out  # type: ignore[return-value]


def drain(ep: SipEndpoint) -> list[object]:
    events = []
    while (event := ep.next_event()) is not None:
        events.append(event)
    return events


def from_stranger(request: Request) -> bytes:
    return request.to_bytes().replace(b"192.0.2.10", b"203.0.113.66")


def run_timers(ep: SipEndpoint, until: float) -> None:
    now = 0.0
    while now < until:
        now += 0.25
        ep.handle_timers(now)


def test_a_stranger_gets_one_stateless_403_and_no_100_trying() -> None:
    ep = endpoint(policy())
    ep.receive(from_stranger(invite()), STRANGER, 0.0)
    (refusal,) = sent(ep)
    assert refusal.status == 403 and refusal.to.tag  # a final answer carries a To tag
    assert ep.transaction_count == 0 and ep.next_deadline() is None
    run_timers(ep, 40.0)  # Timer G would have retransmitted a transaction's 403 by now
    assert sent(ep) == [] and drain(ep) == []


def test_in_drop_mode_a_stranger_hears_nothing_even_for_garbage() -> None:
    admission = policy(drop=True)
    ep = endpoint(admission)
    ep.receive(from_stranger(invite()), STRANGER, 0.0)
    ep.receive(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.66\r\n\r\n", STRANGER, 0.1)
    assert sent(ep) == []
    assert admission.rejected == {"allowlist": 1, "rate": 0, "malformed": 1, "banned": 0}
    assert isinstance(drain(ep)[-1], MessageRejected)


def test_a_carrier_over_its_rate_gets_one_stateless_503_with_retry_after() -> None:
    admission = policy(rate=MethodRate(1.0, 2.0))
    ep = endpoint(admission)
    for i in range(3):
        ep.receive(invite(f"z9hG4bK-burst-{i}", from_tag=f"f{i}").to_bytes(), CARRIER, 0.0)
    statuses = [r.status for r in sent(ep)]
    assert statuses == [100, 100, 503]
    assert ep.transaction_count == 2  # the refused one opened none
    busy = parse_message(invite("z9hG4bK-burst-9", from_tag="f9").to_bytes())
    ep.receive(busy.to_bytes(), CARRIER, 0.1)
    (refusal,) = sent(ep)
    assert refusal.status == 503 and refusal.headers.get("retry-after") == "1"
    assert admission.rejected["rate"] == 2


def test_an_options_flood_does_not_spend_the_invite_budget() -> None:
    admission = policy()
    ep = endpoint(admission)
    for i in range(80):
        ping = options(f"z9hG4bK-ping-{i}").to_bytes().replace(b"ping-1@", f"ping-{i}@".encode())
        ep.receive(ping, CARRIER, 0.0)
    assert [r.status for r in sent(ep)] == [503] * 30
    assert len(drain(ep)) == 50  # handed up to be answered 200
    ep.receive(invite().to_bytes(), CARRIER, 0.0)
    assert [r.status for r in sent(ep)] == [100]
    assert [type(e) for e in drain(ep)] == [RequestReceived]


def test_a_flooding_stranger_is_banned_and_then_dropped_before_parsing() -> None:
    warned: list[str] = []
    admission = policy(warn=warned.append)
    ep = endpoint(admission)
    for i in range(20):
        request = invite(f"z9hG4bK-flood-{i}", from_tag=f"f{i}")
        ep.receive(from_stranger(request), STRANGER, i * 0.01)
    assert [r.status for r in sent(ep)] == [403] * 16
    assert admission.pike.banned("203.0.113.66", 1.0)
    assert warned == ["sip: banned 203.0.113.66 for 300 s: more than 16 requests in 2 s"]
    ep.receive(b"\xff garbage", STRANGER, 1.0)  # not even parsed, so not "malformed"
    assert admission.rejected == {"allowlist": 16, "rate": 0, "malformed": 0, "banned": 5}
    ep.receive(invite().to_bytes(), CARRIER, 1.0)  # the carrier's calls still get in
    assert [r.status for r in sent(ep)] == [100]


def test_a_carrier_burst_is_rate_limited_but_not_banned() -> None:
    admission = policy()
    ep = endpoint(admission)
    for i in range(300):
        request = invite(f"z9hG4bK-c-{i}", from_tag=f"c{i}")
        ep.receive(request.to_bytes(), CARRIER, i / 300)
    assert admission.pike.bans == 0
    assert admission.rejected["rate"] > 0


def test_a_carrier_beyond_its_flood_limit_is_banned_too() -> None:
    admission = policy(carrier=FloodLimit(100, 2.0))
    ep = endpoint(admission)
    for i in range(101):
        ep.receive(
            options(f"z9hG4bK-p-{i}").to_bytes().replace(b"ping-1@", b"%d@" % i), CARRIER, 0.0
        )
    assert admission.pike.banned("192.0.2.10", 1.0)


BYE = (
    b"BYE sip:router@198.51.100.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.77:5060;branch=z9hG4bK-bye-1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:dest@198.51.100.77>;tag=d1\r\n"
    b"To: <sip:router@198.51.100.1>;tag=r1\r\n"
    b"Call-ID: out-1@198.51.100.1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n\r\n"
)
"""A destination hanging up a call the router placed to it."""


def test_a_destination_outside_every_trunk_still_reaches_its_dialog() -> None:
    admission = policy(dialogs=lambda request: request.call_id == "out-1@198.51.100.1")
    ep = endpoint(admission)
    for i in range(30):  # 30 BYEs in 2 s: more than the strict limit, a busy PBX's evening
        ep.receive(BYE.replace(b"bye-1", f"bye-{i}".encode()), DESTINATION, i * 0.05)
    assert admission.pike.bans == 0
    assert sum(isinstance(e, RequestReceived) for e in drain(ep)) == 30


def test_a_stranger_inventing_a_to_tag_is_a_stranger_still() -> None:
    admission = policy(drop=True, dialogs=lambda request: False)
    ep = endpoint(admission)
    ep.receive(BYE, DESTINATION, 0.0)
    assert sent(ep) == [] and drain(ep) == [] and ep.transaction_count == 0
    assert admission.rejected["allowlist"] == 1


def test_malformed_messages_from_carriers_are_answered_400_and_counted() -> None:
    admission = policy()
    ep = endpoint(admission)
    data = options().to_bytes().replace(b"Content-Length: 0", b"Content-Length: 99")
    ep.receive(data, CARRIER, 0.0)
    (answer,) = sent(ep)
    assert answer.status == 400
    assert (answer.headers.get("warning") or "").startswith('399 - "')
    assert "Server" not in answer.headers
    assert admission.rejected["malformed"] == 1


def test_no_product_name_unless_configured() -> None:
    quiet = endpoint(policy())
    quiet.receive(options().to_bytes(), CARRIER, 0.0)
    quiet.respond(drain_request(quiet).transaction_id, options().response(200, to_tag="t"), 0.0)
    (ok,) = sent(quiet)
    assert "Server" not in ok.headers and "User-Agent" not in ok.headers
    named = endpoint(policy(), agent="ExampleSBC")
    named.receive(options().to_bytes(), CARRIER, 0.0)
    named.respond(drain_request(named).transaction_id, options().response(200, to_tag="t"), 0.0)
    (ok,) = sent(named)
    assert ok.headers.get("server") == "ExampleSBC"


def drain_request(ep: SipEndpoint) -> RequestReceived:
    (event,) = drain(ep)
    assert isinstance(event, RequestReceived)
    return event


def test_method_rates_are_read_from_text_and_bad_entries_are_named() -> None:
    assert parse_method_rates("options=5/20, INVITE=50/200") == {
        "OPTIONS": MethodRate(5.0, 20.0),
        "INVITE": MethodRate(50.0, 200.0),
    }
    assert parse_method_rates("") == {}
    for bad in ("OPTIONS=5", "OPTIONS", "OPTIONS=x/2", "OPTIONS=0/5", "1NV=1/1"):
        with pytest.raises(ValueError, match=r"OPTIONS|1NV"):
            parse_method_rates(bad)
