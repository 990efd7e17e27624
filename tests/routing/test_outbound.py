"""The pure builders of what leaves on a leg: outbound INVITE, ACK, caller ID, in-dialog target."""

from __future__ import annotations

from typing import cast

from callrouter.routing.outbound import (
    ANONYMOUS,
    ack_request,
    contact_uri,
    destination_uri,
    dialog_flow,
    dialog_response,
    outbound_invite,
    presented_caller,
)
from callrouter.routing.trunks import Trunk
from callrouter.sip.dialogs import Dialog
from callrouter.sip.events import Flow
from callrouter.sip.message import Request, Response, parse_message
from callrouter.sip.uri import SipUri

CARRIER = Flow("udp", "198.51.100.7", 5060)
PBX = Flow("udp", "203.0.113.9", 5070)


def inbound(*extra: str, body: bytes = b"v=0\r\n", max_forwards: int = 70) -> Request:
    lines = [
        "INVITE sip:+441515550001@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcarrier1",
        "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKinside",
        f"Max-Forwards: {max_forwards}",
        'From: "Jo Bloggs" <sip:+447700900123@carrier.example;user=phone>;tag=carrier-tag',
        "To: <sip:+441515550001@192.0.2.1>",
        "Call-ID: carrier-call-1@carrier.example",
        "CSeq: 7 INVITE",
        "Contact: <sip:gw@198.51.100.7:5060>",
        "Record-Route: <sip:198.51.100.7;lr>",
        *extra,
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return cast(Request, parse_message("\r\n".join(lines).encode() + body))


def build(request: Request, trunk: Trunk | None = None, number: str | None = None) -> Request:
    return outbound_invite(
        request,
        SipUri("203.0.113.9", "reception", None, 5070, {}),
        host="192.0.2.1",
        contact=contact_uri(PBX, "192.0.2.1:5060"),
        presented_number=number,
        trunk=trunk,
        body=b"v=0 anchored\r\n",
    )


def test_the_callers_dialog_keeps_its_record_route_in_the_order_it_came() -> None:
    request = inbound("Record-Route: <sip:192.0.2.50;lr>")
    for status in (180, 183, 200):
        answer = dialog_response(request, status, "our-tag")
        assert answer.status == status and answer.to.tag == "our-tag"
        assert answer.headers.get_all("record-route") == [
            "<sip:198.51.100.7;lr>",
            "<sip:192.0.2.50;lr>",
        ]
    assert dialog_response(inbound(), 200, "t").headers.get_all("record-route") == [
        "<sip:198.51.100.7;lr>"
    ]


def test_outbound_invite_hides_the_inbound_legs_topology() -> None:
    invite = build(inbound(), number="+447700900123")
    wire = invite.to_bytes().decode()
    for leaked in ("carrier.example", "198.51.100.7", "10.1.1.1", "carrier-call-1", "carrier-tag"):
        assert leaked not in wire
    assert invite.headers.get_all("via") == []  # the transaction layer adds ours
    assert invite.headers.get("contact") == "<sip:callrouter@192.0.2.1:5060>"
    assert invite.call_id.endswith("@192.0.2.1")
    assert invite.cseq.number == 1 and invite.cseq.method == "INVITE"
    assert invite.max_forwards == 69
    assert invite.body == b"v=0 anchored\r\n"
    assert invite.from_.display_name == "Jo Bloggs"
    assert str(invite.from_.uri) == "sip:+447700900123@192.0.2.1"
    assert invite.from_.tag and invite.from_.tag != "carrier-tag"
    assert invite.uri == "sip:reception@203.0.113.9:5070"


def test_every_outbound_invite_is_a_fresh_dialog() -> None:
    request = inbound()
    first, second = build(request), build(request)
    assert first.call_id != second.call_id
    assert first.from_.tag != second.from_.tag


def test_max_forwards_never_reaches_zero() -> None:
    assert build(inbound(max_forwards=1)).max_forwards == 1


def test_caller_id_presentation() -> None:
    request = inbound()
    assert presented_caller(request, "+447700900123", None, "h") == (
        '"Jo Bloggs" <sip:+447700900123@h>'
    )
    rewrite = Trunk("out", caller_id="rewrite", caller_id_number="+441515550000")
    assert presented_caller(request, "+447700900123", rewrite, "h") == "<sip:+441515550000@h>"
    withhold = Trunk("out", caller_id="withhold")
    assert presented_caller(request, "+447700900123", withhold, "h") == ANONYMOUS
    asked = inbound("Privacy: id")
    assert presented_caller(asked, "+447700900123", None, "h") == ANONYMOUS
    invite = build(asked)
    assert invite.headers.get("privacy") == "id"
    assert "Bloggs" not in invite.to_bytes().decode()
    assert build(request).headers.get("privacy") is None


def test_destination_uri_sends_e164_through_the_outbound_trunk() -> None:
    trunk = Trunk("out", uri="sip:gw.example:5080;transport=tcp")
    uri, via = destination_uri("+441515550002", trunk)
    assert str(uri) == "sip:+441515550002@gw.example:5080;transport=tcp" and via is trunk
    assert destination_uri("+441515550002", None) == (None, None)
    assert destination_uri("+441515550002", Trunk("in")) == (None, None)
    uri, via = destination_uri("sip:desk@203.0.113.9:5070", trunk)
    assert str(uri) == "sip:desk@203.0.113.9:5070" and via is None
    assert destination_uri("tel:+441515550002", trunk) == (None, None)
    assert destination_uri("sip:", trunk) == (None, None)


def answered_dialog(contact: str, *record_route: str) -> Dialog:
    invite = build(inbound())
    lines = [
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx",
        f"From: {invite.headers.get('from')}",
        f"To: {invite.headers.get('to')};tag=pbx1",
        f"Call-ID: {invite.call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <{contact}>",
        *(f"Record-Route: {route}" for route in record_route),
        "Content-Length: 0",
        "",
        "",
    ]
    response = cast(Response, parse_message("\r\n".join(lines).encode()))
    return Dialog.as_uac(invite, response, "sip:callrouter@192.0.2.1:5060")


def test_in_dialog_requests_follow_route_then_contact_when_it_is_an_address() -> None:
    assert dialog_flow(answered_dialog("sip:pbx@203.0.113.10:5090"), PBX) == Flow(
        "udp", "203.0.113.10", 5090
    )
    routed = answered_dialog("sip:pbx@203.0.113.10:5090", "<sip:203.0.113.20:5099;lr>")
    assert dialog_flow(routed, PBX) == Flow("udp", "203.0.113.20", 5099)
    assert dialog_flow(answered_dialog("sip:pbx@pbx.example"), PBX) == PBX
    assert dialog_flow(answered_dialog("sip:pbx@203.0.113.10"), PBX, behind_nat=True) == PBX


def test_in_dialog_requests_over_tls_keep_the_name_the_dialog_was_verified_for() -> None:
    """A PBX reached as pbx.example writes its IP address in Contact: the ACK and BYE there
    must still meet a certificate for pbx.example, not for whoever holds that address."""
    verified = Flow("tls", "203.0.113.10", 5061, server_name="pbx.example")
    contact = answered_dialog("sip:pbx@203.0.113.11;transport=tls")
    assert dialog_flow(contact, verified) == Flow(
        "tls", "203.0.113.11", 5061, server_name="pbx.example"
    )
    # A caller's own connection to us carries no name: its Contact is checked as an IP literal.
    caller = Flow("tls", "198.51.100.7", 40123)
    assert dialog_flow(contact, caller) == Flow("tls", "203.0.113.11", 5061)


def test_ack_of_a_2xx_is_its_own_transaction() -> None:
    dialog = answered_dialog("sip:pbx@203.0.113.10:5090")
    first = ack_request(dialog, 1, PBX, "192.0.2.1:5060")
    second = ack_request(dialog, 1, PBX, "192.0.2.1:5060")
    assert first.method == "ACK" and first.cseq.number == 1
    assert first.top_via.branch != second.top_via.branch
    assert first.top_via.branch is not None and first.top_via.branch.startswith("z9hG4bK")
    assert first.to.tag == "pbx1"
