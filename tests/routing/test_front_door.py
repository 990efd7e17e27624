"""How the front door reads the dialled and the calling number from what carriers send."""

from __future__ import annotations

from callrouter.routing.front_door import Networks, caller_number, dialled_number, uri_number
from callrouter.sip.message import Request
from callrouter.sip.uri import parse_uri
from tests.sip.messages import invite


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
        ("tel:+44-151-555-0001", "+441515550001"),
        ("sip:reception@198.51.100.1", None),
    ]:
        request = invite()
        request.uri = uri
        assert dialled_number(request) == expected, uri


def test_the_to_header_names_the_number_when_the_request_uri_does_not() -> None:
    request = invite()
    request.uri = "sip:trunk-7@198.51.100.1"
    assert dialled_number(request) is None
    assert uri_number(request.to.uri) == "+441515550001"


def test_caller_number_prefers_p_asserted_identity_and_respects_privacy() -> None:
    assert caller_number(invite()) == "+447700900123"
    asserted = with_headers(p_asserted_identity="<tel:+447700900999>")
    assert caller_number(asserted) == "+447700900999"
    private = with_headers(privacy="id", p_asserted_identity="<tel:+447700900999>")
    assert caller_number(private) == ""
    anonymous = with_headers(From='"Anonymous" <sip:anonymous@anonymous.invalid>;tag=a')
    assert caller_number(anonymous) == ""


def test_carrier_allowlist_takes_addresses_and_networks() -> None:
    carriers = Networks.parse("192.0.2.0/24, 2001:db8::1")
    assert "192.0.2.77" in carriers and "2001:db8::1" in carriers
    assert "198.51.100.1" not in carriers and "not-an-ip" not in carriers
    assert uri_number(parse_uri("sip:+15555550100@x")) == "+15555550100"
