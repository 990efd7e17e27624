"""A header field that arrived and was not changed leaves as the bytes it arrived as; a changed
one is written anew (callrouter.sip.headers.Headers keeps each field's line as received)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Flow, RequestReceived
from callrouter.sip.message import Request, Response, parse_message

UPSTREAM_VIAS = (
    b"VIA : SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-up-1, SIP/2.0/TCP 192.0.2.12;branch=z9hG4bK-up-2"
)
"""Two Via elements in one field, as a proxy in front may write them."""
# Odd spacing around the colon, compact names, a tab, lower-case and upper-case names, a field
# folded over three lines, a list header in one field and an unknown header: all as received.
ODD = (
    b"INVITE sip:+441515550001@198.51.100.1 SIP/2.0\r\n"
    b"v:SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-odd-1 ;rport\r\n" + UPSTREAM_VIAS + b"\r\n"
    b"max-forwards:\t69\r\n"
    b'f:   "07700  900123"<sip:+447700900123@192.0.2.10>;tag=ft1  \r\n'
    b"t: <sip:+441515550001@198.51.100.1>\r\n"
    b"i:odd-1@192.0.2.10\r\n"
    b"CSeq:   1    INVITE\r\n"
    b"Subject: a field\r\n"
    b"  folded over\r\n"
    b"\tthree lines\r\n"
    b"X-Carrier-Ref  :  a;b=c , d\r\n"
    b"m: <sip:gw@192.0.2.10:5060>\r\n"
    b"c: application/sdp\r\n"
    b"l:  4\r\n"
    b"\r\n"
    b"v=0\n"
)


def _parse(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_an_unchanged_message_is_sent_as_it_arrived() -> None:
    request = _parse(ODD)
    assert request.headers.get("subject") == "a field folded over three lines"
    assert request.to_bytes() == ODD


def test_each_unchanged_field_keeps_its_bytes_and_each_changed_one_is_written_anew() -> None:
    request = _parse(ODD)
    request.headers.set("Max-Forwards", "68")
    request.headers.replace_value("t", "<sip:+441515550001@198.51.100.1>;tag=b2")
    request.headers.pop_first("via")
    written = request.to_bytes()
    lines = _lines(written)
    assert b"Max-Forwards: 68" in lines
    assert b"t: <sip:+441515550001@198.51.100.1>;tag=b2" in lines
    # The second Via field lost nothing; the field it came from now starts with it.
    assert lines[1] == UPSTREAM_VIAS
    for kept in (b'f:   "07700  900123"', b"i:odd-1", b"CSeq:   1    INVITE", b"X-Carrier-Ref"):
        assert any(line.startswith(kept) for line in lines), kept
    assert b"Subject: a field\r\n  folded over\r\n\tthree lines\r\n" in written
    assert _parse(written).to.tag == "b2"


def test_popping_one_of_several_vias_in_a_field_writes_the_rest_anew() -> None:
    request = _parse(ODD)
    request.headers.pop_first("via")
    request.headers.pop_first("via")
    lines = _lines(request.to_bytes())
    assert lines[1] == b"VIA: SIP/2.0/TCP 192.0.2.12;branch=z9hG4bK-up-2"


def test_the_response_echoes_the_request_fields_as_they_arrived() -> None:
    request = _parse(ODD)
    lines = _lines(request.response(180, to_tag="tt9").to_bytes())
    assert lines[0] == b"SIP/2.0 180 Ringing"
    assert lines[1:8] == [
        b"v:SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-odd-1 ;rport",
        UPSTREAM_VIAS,
        b'f:   "07700  900123"<sip:+447700900123@192.0.2.10>;tag=ft1  ',
        # The To gains our tag: written anew, under the name the peer used.
        b"t: <sip:+441515550001@198.51.100.1>;tag=tt9",
        b"i:odd-1@192.0.2.10",
        b"CSeq:   1    INVITE",
        b"Content-Length: 0",
    ]


def test_a_to_that_has_its_tag_already_is_echoed_as_it_arrived() -> None:
    request = _parse(ODD.replace(b"t: <sip:+441515550001@198.51.100.1>", b"t:<sip:x@y> ; tag=ab"))
    assert b"t:<sip:x@y> ; tag=ab" in _lines(request.response(200, to_tag="other").to_bytes())


def test_the_answer_on_the_wire_carries_the_callers_lines() -> None:
    """Through the transaction layer: the top Via is stamped with received and rport (changed,
    so written anew); the other echoed fields go back byte for byte."""
    endpoint = SipEndpoint({"udp": "198.51.100.1:5060"}, new_token=lambda: "t")
    endpoint.receive(ODD, Flow("udp", "203.0.113.50", 40000), 0.0)
    event = endpoint.next_event()
    assert isinstance(event, RequestReceived)
    endpoint.respond(event.transaction_id, event.request.response(486, to_tag="tt9"), 0.0)
    final = endpoint.transmissions()[-1].data
    lines = _lines(final)
    assert lines[1] == (
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-odd-1;rport=40000;received=203.0.113.50"
    )
    assert lines[3] == b'f:   "07700  900123"<sip:+447700900123@192.0.2.10>;tag=ft1  '
    assert b"CSeq:   1    INVITE" in lines


def test_content_length_follows_the_body() -> None:
    # Over UDP the bytes past Content-Length are dropped: the line as received still holds.
    request = _parse(ODD + b"trailing junk")
    assert request.body == b"v=0\n"
    assert request.to_bytes() == ODD
    request.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n"
    assert f"l: {len(request.body)}".encode() in _lines(request.to_bytes())
    request.body = b""
    assert b"l: 0" in _lines(request.to_bytes())


def test_a_message_with_bare_lf_line_ends_leaves_with_crlf_only() -> None:
    data = ODD.replace(b"\r\n", b"\n")
    written = _parse(data).to_bytes()
    head = written.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert b"Subject: a field folded over three lines" in _lines(written)
    assert _parse(written).headers == _parse(data).headers


def test_a_response_relayed_unchanged_is_byte_for_byte() -> None:
    data = (
        b"SIP/2.0 200 OK\r\n"
        b"Via:SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKours;rport=5060\r\n"
        b"From:<sip:+447700900123@198.51.100.1>;tag=ours\r\n"
        b"To:<sip:desk@203.0.113.9>;tag=pbx\r\n"
        b"Call-ID:  x@198.51.100.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Contact:<sip:desk@203.0.113.9:5070>\r\n"
        b"Content-Length:0\r\n\r\n"
    )
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.to_bytes() == data


_NAMES = {
    "via": ["Via", "v", "VIA", "via"],
    "from": ["From", "f", "FROM"],
    "to": ["To", "t", "tO"],
    "call-id": ["Call-ID", "i", "call-id"],
    "cseq": ["CSeq", "cseq"],
    "x-note": ["X-Note", "x-note"],
}
_VALUES = {
    "via": "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-p1",
    "from": "<sip:a@192.0.2.10>;tag=f1",
    "to": "<sip:b@198.51.100.1>",
    "call-id": "prop-1@192.0.2.10",
    "cseq": "4 OPTIONS",
    "x-note": "one two three four",
}
_gap = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def _odd_field(draw: st.DrawFn, key: str) -> bytes:
    name = draw(st.sampled_from(_NAMES[key]))
    before, after, trailing = draw(_gap), draw(_gap), draw(_gap)
    words = _VALUES[key].split(" ")
    value = words[0]
    for word in words[1:]:
        # A space between words may be written as a fold onto the next line.
        value += draw(st.sampled_from([" ", "  ", "\r\n ", "\r\n\t"])) + word
    return f"{name}{before}:{after}{value}{trailing}".encode()


@given(st.data())
def test_any_spelling_the_parser_takes_is_sent_back_unchanged(data: st.DataObject) -> None:
    keys = data.draw(st.permutations(list(_NAMES)))
    fields = [data.draw(_odd_field(key)) for key in keys]
    message = (
        b"OPTIONS sip:198.51.100.1 SIP/2.0\r\n"
        + b"".join(f + b"\r\n" for f in fields)
        + b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    request = _parse(message)
    assert request.to_bytes() == message
    assert request.response(200).to_bytes().count(b"\r\n") >= 7
