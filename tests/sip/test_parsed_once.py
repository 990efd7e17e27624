"""The structured header values a message's accessors give are parsed once and follow every
change to the fields they come from (callrouter.sip.headers.Headers.parsed)."""

from __future__ import annotations

import pytest

from callrouter.sip.errors import ParseError
from callrouter.sip.headers import parse_name_address
from callrouter.sip.uri import SipUri, parse_uri
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


def test_a_value_seen_in_another_message_shares_its_parse_and_a_bad_one_fails_each_time() -> None:
    first, second = invite(branch="z9hG4bK-a"), invite(branch="z9hG4bK-b")
    assert first.from_ is second.from_  # the ACK, the BYE, every response repeat a call's From
    assert first.target is second.target
    for _ in range(2):
        with pytest.raises(ParseError, match="bad port"):
            parse_uri("sip:desk@203.0.113.9:99999")


def test_changing_a_shared_parse_makes_a_new_value() -> None:
    request = invite()
    tagged = request.to.with_tag("b2")
    assert request.to.tag is None and tagged.tag == "b2"
    target = request.target
    assert isinstance(target, SipUri)
    assert "lr" in target.with_params(lr=None).params and "lr" not in target.params
    assert invite().to.tag is None


def test_hostile_values_cannot_grow_the_kept_parses_past_their_bound() -> None:
    for n in range(5000):
        parse_name_address(f"<sip:u{n}@198.51.100.1>;tag=t{n}")
        parse_uri(f"sip:u{n}@198.51.100.1")
    for kept in (parse_name_address.cache_info(), parse_uri.cache_info()):
        assert kept.maxsize is not None and kept.currsize <= kept.maxsize
