"""RFC 4475 torture messages (tests/sip/vectors/rfc4475): parsed values and the router's answer.

Each .dat file is the exact bytes of one message (written by build.py from the RFC's notation);
expected.toml says what the RFC expects. ``OURS`` lists where our answer differs from the RFC's
first suggestion, each with the reason the RFC allows it or why it does not apply to us.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.errors import ParseError
from callrouter.sip.events import Flow, RequestReceived
from callrouter.sip.message import Request, parse_message
from callrouter.sip.screening import Capabilities, answer_options, screen

VECTORS = Path(__file__).with_name("vectors") / "rfc4475"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((VECTORS / "expected.toml").read_text())
PEER = Flow("udp", "192.0.2.1", 5060)

OURS = {
    # The RFC allows ignoring a Date we never read.
    "baddate": "process",
    # The RFC allows falling back to RFC 2543 matching for a bare magic cookie.
    "badbranch": "200",
    # We are the endpoint for OPTIONS, which the RFC says to process as if Max-Forwards > 0.
    "zeromf": "200",
    # We are not a registrar: REGISTER is a method we know and do not offer.
    "unksm2": "405",
    "regaut01": "405",
    "cparam01": "405",
    "cparam02": "405",
    "regescrt": "405",
    "escnull": "405",
    "dblreq": "405",
    "esc02": "501",  # RE%47IST%45R is not REGISTER: an unknown method
    "mpart01": "405",  # MESSAGE
    # Responses that match no transaction of ours are dropped (§18.1.2), however well formed.
    "bcast": "drop",
    "unreason": "drop",
    "noreason": "drop",
    # Valid INVITEs we would route: the layer above takes them (no immediate final answer).
    "wsinv": "process",
    "esc01": "process",
    "longreq": "process",
    "inv2543": "process",
    # Valid requests with an unusual method or our own OPTIONS.
    "intmeth": "501",
    "lwsdisp": "200",
    "semiuri": "200",
    "transports": "200",
}


def answer(data: bytes) -> str:
    """What the router sends back for these bytes: a status, "drop" or "process"."""
    endpoint = SipEndpoint({"udp": "198.51.100.1:5060"}, new_token=lambda: "t")
    endpoint.receive(data, PEER, 0.0)
    statuses = []
    while (event := endpoint.next_event()) is not None:
        if isinstance(event, RequestReceived):
            request = event.request
            refusal = screen(request, Capabilities(), "t")
            if refusal is None and request.method != "OPTIONS":
                return "process"
            reply = refusal or answer_options(request, Capabilities(), "t")
            endpoint.respond(event.transaction_id, reply, 0.0)
    for t in endpoint.transmissions():
        # Read only the status line: a refusal echoes the peer's broken headers.
        version, status, _ = t.data.split(b" ", 2)
        assert version == b"SIP/2.0"
        if int(status) >= 200:
            statuses.append(status.decode())
    return statuses[-1] if statuses else "drop"


def expected_answer(name: str) -> str:
    if name in OURS:
        return OURS[name]
    return str(EXPECTED[name]["expect"]).replace("ignore/drop", "drop")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_router_answers_as_the_rfc_says(name: str) -> None:
    assert answer((VECTORS / f"{name}.dat").read_bytes()) == expected_answer(name)


VALID = sorted(
    n for n, e in EXPECTED.items() if e["valid"] and not str(e.get("expect", "")).startswith("4")
)


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_to_the_values_the_rfc_gives(name: str) -> None:
    facts = EXPECTED[name]
    message = parse_message((VECTORS / f"{name}.dat").read_bytes())
    if "method" in facts:
        assert isinstance(message, Request)
        assert message.method == facts["method"]
    if "request_uri" in facts:
        assert isinstance(message, Request)
        assert message.uri == facts["request_uri"]
    if "call_id" in facts:
        assert message.call_id == facts["call_id"]
    if "cseq" in facts:
        assert [message.cseq.number, message.cseq.method] == facts["cseq"]
    if "max_forwards" in facts:
        assert isinstance(message, Request)
        assert message.max_forwards == facts["max_forwards"]
    if "to_tag" in facts:
        assert message.to.tag == facts["to_tag"]
    if "from_tag" in facts:
        assert message.from_.tag == facts["from_tag"]
    if "via_count" in facts:
        assert len(message.vias) == facts["via_count"]
    if "content_length" in facts:
        assert len(message.body) == facts["content_length"]


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_serialise_to_what_parses_the_same(name: str) -> None:
    """Serialising keeps every field, name spelling and order; it only adds a Content-Length
    when the peer left it out (framing on streams needs one)."""
    first = parse_message((VECTORS / f"{name}.dat").read_bytes())
    written = first.to_bytes()
    again = parse_message(written)
    assert again.to_bytes() == written
    assert [f for f in again.headers if f[0].lower() not in ("content-length", "l")] == [
        f for f in first.headers if f[0].lower() not in ("content-length", "l")
    ]
    assert again.body == first.body


def test_the_wsinv_display_names_unescape_quoted_pairs() -> None:
    message = parse_message((VECTORS / "wsinv.dat").read_bytes())
    assert message.from_.display_name == 'J Rosenberg \\"'
    contact = message.headers.get("contact")
    assert contact is not None and contact.startswith('"Quoted string \\"\\""')


def test_a_response_with_a_huge_status_code_is_a_parse_error_without_answer() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message((VECTORS / "bigcode.dat").read_bytes())
    assert caught.value.status is None
