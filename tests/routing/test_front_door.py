"""How the front door reads the dialled and calling numbers carriers send, trunk by trunk."""

from __future__ import annotations

import dataclasses

import pytest

from callrouter.ip_networks import parse_networks
from callrouter.routing.front_door import FrontDoor, caller_number, dialled_number, uri_number
from callrouter.routing.trunks import Trunk, TrunkTable, normalise
from callrouter.sip.message import Request
from callrouter.sip.screening import Capabilities, answer_options, screen
from callrouter.sip.uri import parse_uri
from tests.sip.messages import invite, options

CARRIER = Trunk("carrier", parse_networks("198.51.100.0/24"))


def with_headers(**changes: str) -> Request:
    request = invite()
    for name, value in changes.items():
        request.headers.set(name.replace("_", "-"), value)
    return request


def test_dialled_number_forms() -> None:
    for uri, expected in [
        ("sip:+441515550001@198.51.100.1", "+441515550001"),
        ("sip:441515550001@198.51.100.1;user=phone", "+441515550001"),
        ("sip:00441515550001@198.51.100.1", "+441515550001"),
        ("sip:01515550001@198.51.100.1", "+441515550001"),
        ("tel:+44-151-555-0001", "+441515550001"),
    ]:
        request = invite()
        request.uri = uri
        assert dialled_number(request, CARRIER) == expected, uri


def test_national_numbers_are_read_in_the_trunks_country() -> None:
    assert normalise("01515550001", "GB") == "+441515550001"
    assert normalise("2025550123", "US") == "+12025550123"
    assert normalise("12025550123", "US") == "+12025550123"
    assert normalise("441515550001", "US") == "+441515550001"
    assert normalise("12", "GB") is None
    assert normalise("", "GB") is None


def test_the_to_header_names_the_number_when_the_request_uri_does_not() -> None:
    request = invite()
    request.uri = "sip:trunk-7@198.51.100.1"
    assert dialled_number(request, CARRIER) == "+441515550001"
    assert uri_number(request.to.uri) == "+441515550001"


def test_a_trunk_can_read_the_number_from_to_even_when_the_request_uri_has_digits() -> None:
    request = invite()
    request.uri = "sip:+441510000000@198.51.100.1"  # the SBC's pilot number, not the one called
    assert dialled_number(request, CARRIER) == "+441510000000"
    from_to = Trunk("sbc", CARRIER.networks, number_from="to")
    assert dialled_number(request, from_to) == "+441515550001"


def test_caller_number_prefers_p_asserted_identity_and_respects_privacy() -> None:
    assert caller_number(invite()) == "+447700900123"
    asserted = with_headers(p_asserted_identity="<tel:+447700900999>")
    assert caller_number(asserted) == "+447700900999"
    national = with_headers(p_asserted_identity="<sip:07700900999@carrier>")
    assert caller_number(national, "GB") == "+447700900999"
    private = with_headers(privacy="id", p_asserted_identity="<tel:+447700900999>")
    assert caller_number(private) == ""
    anonymous = with_headers(From='"Anonymous" <sip:anonymous@anonymous.invalid>;tag=a')
    assert caller_number(anonymous) == ""


def test_the_narrowest_matching_network_picks_the_trunk() -> None:
    config = Trunk("config", parse_networks("127.0.0.0/8"))
    table = TrunkTable(
        config,
        [
            Trunk("carrier", parse_networks("192.0.2.0/24, 2001:db8::/32")),
            Trunk("carrier-sbc", parse_networks("192.0.2.7"), nat=True),
        ],
    )
    assert table.for_source("192.0.2.77").name == "carrier"  # type: ignore[union-attr]
    assert table.for_source("192.0.2.7").name == "carrier-sbc"  # type: ignore[union-attr]
    assert table.for_source("2001:db8::1").name == "carrier"  # type: ignore[union-attr]
    assert table.for_source("127.0.0.1") is config
    assert table.for_source("198.51.100.1") is None
    assert table.for_source("not-an-ip") is None
    table.replace([])
    assert table.for_source("192.0.2.7") is None and table.for_source("127.0.0.1") is config


def test_the_outbound_trunk_is_the_first_with_a_uri() -> None:
    table = TrunkTable(Trunk("config", uri="sip:gw.example"), [Trunk("inbound-only")])
    assert table.outbound().name == "config"  # type: ignore[union-attr]
    table.replace([Trunk("gw2", uri="sip:gw2.example", caller_id="rewrite")])
    assert table.outbound().name == "gw2"  # type: ignore[union-attr]


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'192\.0\.2\.300'"):
        parse_networks("192.0.2.0/24, 192.0.2.300")
    assert uri_number(parse_uri("sip:+15555550100@x")) == "+15555550100"


def test_options_names_the_methods_relayed_in_dialogs_and_session_timers() -> None:
    """RFC 3261 §20.5: Allow lists UPDATE and INFO, which connected calls relay; Supported
    lists timer (RFC 4028), so a carrier's ``Require: timer`` is no longer refused with 420."""
    (caps_field,) = [f for f in dataclasses.fields(FrontDoor) if f.name == "capabilities"]
    caps: Capabilities = caps_field.default_factory()  # type: ignore[operator]
    reply = answer_options(options(), caps, "t")
    assert reply.headers.get_all("Allow") == [
        *("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO")
    ]
    assert reply.headers.get_all("Supported") == ["timer"]
    required = with_headers(Require="timer")
    assert screen(required, caps, "t") is None
