"""The structured header values a message's accessors give are parsed once and follow every
change to the fields they come from (callrouter.sip.headers.Headers.parsed)."""

from __future__ import annotations

import pytest

from callrouter.sip.errors import ParseError
from callrouter.sip.headers import parse_name_address
from tests.sip.messages import invite


def test_the_accessors_share_the_parse_the_parser_made() -> None:
    request = invite()
    assert request.top_via is request.top_via
    assert request.from_ is request.from_
    assert request.headers.parsed("contact", parse_name_address) is request.headers.parsed(
        "contact", parse_name_address
    )


def test_popping_the_top_via_shows_the_next_one() -> None:
    request = invite()
    request.headers.add("Via", "SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK-ours", first=True)
    assert request.top_via.branch == "z9hG4bK-ours"
    request.headers.pop_first("via")
    assert request.top_via.branch == "z9hG4bK-carrier-1"


def test_set_and_remove_are_seen_by_the_accessors() -> None:
    request = invite()
    assert request.cseq.number == 1
    request.headers.set("CSeq", "7 INVITE")
    assert (request.cseq.number, request.cseq.method) == (7, "INVITE")
    assert request.to.tag is None
    request.headers.set("t", "<sip:+441515550001@198.51.100.1>;tag=b2")
    assert request.to.tag == "b2"
    request.headers.remove("call-id")
    with pytest.raises(ParseError, match="no Call-ID"):
        _ = request.call_id


def test_a_copy_keeps_its_own_parses() -> None:
    request = invite()
    copy = request.headers.copy()
    copy.set("From", "<sip:anonymous@anonymous.invalid>;tag=x9")
    assert request.from_.tag == "ft1"
    changed = copy.parsed("from", parse_name_address)
    assert changed is not None and changed.tag == "x9"


def test_a_bad_value_fails_on_every_read() -> None:
    request = invite()
    request.headers.set("CSeq", "two INVITE")
    for _ in range(2):
        with pytest.raises(ParseError, match="bad CSeq"):
            _ = request.cseq
