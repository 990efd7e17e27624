"""INVITEs written the way real trunks and SBCs write them (tests/sip/vectors/carriers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrouter.routing.front_door import dialled_number
from callrouter.routing.trunks import Trunk
from callrouter.sip.message import Request, parse_message
from callrouter.sip.screening import Capabilities, screen
from callrouter.sip.sdp import parse_sdp

CARRIERS = Path(__file__).with_name("vectors") / "carriers"


def load(name: str) -> Request:
    message = parse_message((CARRIERS / f"{name}.dat").read_bytes())
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize("name", ["compact", "teluri", "barelf"])
def test_each_reaches_the_router_as_a_call_to_the_tracking_number(name: str) -> None:
    request = load(name)
    assert dialled_number(request, Trunk("carrier")) == "+441515550001"
    assert screen(request, Capabilities(), "t") is None
    again = parse_message(request.to_bytes())
    assert again.to_bytes() == request.to_bytes()


def test_compact_forms_read_like_long_ones() -> None:
    request = load("compact")
    assert request.call_id == "c0mpact-1@203.0.113.50"
    assert request.from_.tag == "sbc1" and request.top_via.params["rport"] is None
    assert request.content_type == "application/sdp"


def test_folded_multi_value_headers_and_ipv6_vias() -> None:
    request = load("teluri")
    assert request.headers.get_all("p-asserted-identity") == [
        "<sip:+447700900123@carrier.example;user=phone>",
        "<tel:+447700900123>",
    ]
    first, second = request.vias
    assert (first.transport, first.host, first.port) == ("TCP", "[2001:db8::50]", 5060)
    assert second.params["received"] == "192.0.2.77"
    assert request.from_.display_name == "Anonymous"


def test_bare_lf_and_trailing_spaces_are_tolerated() -> None:
    request = load("barelf")
    assert request.to.tag is None and request.body == b""
    contact = request.headers.get("contact") or ""
    assert '+sip.instance="<urn:uuid:' in contact


def test_the_sdp_keeps_every_line_through_an_anchor_rewrite() -> None:
    body = load("compact").body
    sdp = parse_sdp(body)
    assert sdp.to_bytes() == body
    audio, video = sdp.media
    assert audio.rtpmap["18"] == "G729/8000" and audio.ptime == 20
    assert audio.attribute("rtcp") == "16385" and video.port == 0
    sdp.anchor("198.51.100.1", [40000, 0])
    text = str(sdp)
    assert "c=IN IP4 198.51.100.1\r\n" in text and "m=audio 40000 RTP/AVP 8 0 18 101" in text
    assert "o=- 3912 3913 IN IP4 198.51.100.1" in text
    assert "a=fmtp:18 annexb=no" in text and "m=video 0 RTP/AVP 96" in text
