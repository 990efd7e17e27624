"""The address written into SIP and SDP: advertised, bound, or the interface towards the peer;
never a wildcard. Real sockets on loopback for the route look-up and the listeners."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
from contextlib import AsyncExitStack

import pytest

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Flow
from callrouter.sip.headers import Headers
from callrouter.sip.message import Request, parse_message
from callrouter.transport.advertise import (
    Advertisement,
    LocalAddresses,
    RouteSource,
    is_wildcard,
    media_address,
    media_advertisement,
    parse_advertise,
)
from callrouter.transport.listeners import Listening, advertised, open_listeners
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.service import SipService


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", ("203.0.113.5", None)),
        (" 203.0.113.5:5080 ", ("203.0.113.5", 5080)),
        ("sip.example.com", ("sip.example.com", None)),
        ("sip.example.com:5060", ("sip.example.com", 5060)),
        ("2001:db8::5", ("2001:db8::5", None)),
        ("[2001:db8::5]:5062", ("2001:db8::5", 5062)),
    ],
)
def test_advertise_values_are_read(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_advertise(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "is not host"),
        ("0.0.0.0", "wildcard"),
        ("[::]:5060", "wildcard"),
        ("203.0.113.5:0", "port must be 1-65535"),
        ("203.0.113.5:99999", "port must be 1-65535"),
        ("203.0.113.5:sip", "port must be 1-65535"),
        ("[2001:db8::5", "is not host"),
        ("a b", "is not host"),
        ("sip:router@203.0.113.5", "port must be 1-65535"),
    ],
)
def test_bad_advertise_values_say_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_advertise(text)


def test_media_advertise_must_be_an_address() -> None:
    assert media_address(" 203.0.113.5 ") == "203.0.113.5"
    assert media_address("[2001:db8::5]") == "2001:db8::5"
    with pytest.raises(ValueError, match="not an IP address"):
        media_address("media.example.com")
    with pytest.raises(ValueError, match="wildcard"):
        media_address("0.0.0.0")


def test_wildcards_are_recognised() -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and is_wildcard("[::]")
    assert is_wildcard("")
    assert not is_wildcard("127.0.0.1") and not is_wildcard("router.example")


def test_the_route_to_a_peer_names_the_interface_that_reaches_it() -> None:
    route = RouteSource(limit=2)
    assert route.towards("127.0.0.1") == "127.0.0.1"
    assert route.towards("127.0.0.53") == "127.0.0.1"
    assert route.towards("127.0.0.54") == "127.0.0.1"
    assert len(route._cache) == 2  # bounded: the oldest destination was forgotten
    # A destination with no route at all is not remembered and never gives a wildcard.
    unreachable = route.towards("not-an-address")
    assert unreachable == "127.0.0.1" and "not-an-address" not in route._cache


def test_a_listener_advertises_the_setting_then_a_concrete_bind_then_the_route() -> None:
    assert Advertisement.of("0.0.0.0", 5060, "203.0.113.5") == Advertisement("203.0.113.5", 5060)
    assert Advertisement.of("0.0.0.0", 5060, "203.0.113.5:5080") == Advertisement(
        "203.0.113.5", 5080
    )
    assert Advertisement.of("192.0.2.7", 5060, None) == Advertisement("192.0.2.7", 5060)
    assert Advertisement.of("::", 5060, None) == Advertisement(None, 5060)

    asked: list[str] = []

    def route(host: str) -> str:
        asked.append(host)
        return "2001:db8::7" if ":" in host else "198.51.100.7"

    addresses = LocalAddresses(
        {"udp": Advertisement(None, 5060), "tls": Advertisement("sip.example.com", 5061)}, route
    )
    assert addresses.sent_by(Flow("udp", "198.51.100.20", 5060)) == "198.51.100.7:5060"
    assert addresses.sent_by(Flow("udp", "2001:db8::20", 5060)) == "[2001:db8::7]:5060"
    assert addresses.host(Flow("tls", "198.51.100.20", 5061)) == "sip.example.com"
    assert addresses.sent_by(Flow("tls", "198.51.100.20", 5061)) == "sip.example.com:5061"
    # No TCP listener of its own: the UDP listener's answer stands for it.
    assert addresses.sent_by(Flow("tcp", "198.51.100.21", 5060)) == "198.51.100.7:5060"
    assert asked == ["198.51.100.20", "2001:db8::20", "198.51.100.21"]
    assert LocalAddresses().sent_by(Flow("udp", "198.51.100.20", 5060)) == "invalid"


def test_each_listener_advertises_its_own_port_and_tls_may_name_its_certificate() -> None:
    listening = [
        Listening("udp", "0.0.0.0", 5060),
        Listening("tcp", "0.0.0.0", 5060),
        Listening("tls", "0.0.0.0", 5061),
    ]
    peer = Flow("udp", "198.51.100.20", 5060)
    same = advertised(listening, "203.0.113.5:5080")
    assert [same.sent_by(Flow(t, peer.host, 1)) for t in ("udp", "tcp", "tls")] == [
        "203.0.113.5:5080",
        "203.0.113.5:5080",
        "203.0.113.5:5061",  # the advertised port is the UDP/TCP one; TLS keeps its own
    ]
    named = advertised(listening, "203.0.113.5", "sip.example.com")
    assert named.sent_by(Flow("tls", peer.host, 1)) == "sip.example.com:5061"
    assert named.sent_by(Flow("udp", peer.host, 1)) == "203.0.113.5:5060"
    unset = advertised(listening, None)
    assert {a.host for a in unset.listeners.values()} == {None}  # the route decides per peer


def test_sdp_names_media_advertise_then_the_bind_then_sip_advertise_then_the_route() -> None:
    assert media_advertisement("0.0.0.0", "203.0.113.9", "203.0.113.5") == "203.0.113.9"
    assert media_advertisement("192.0.2.7", None, "203.0.113.5") == "192.0.2.7"
    assert media_advertisement("0.0.0.0", None, "203.0.113.5:5080") == "203.0.113.5"
    by_route = media_advertisement("0.0.0.0", None, "sip.example.com")
    assert callable(by_route) and by_route("127.0.0.1") == "127.0.0.1"
    with pytest.raises(ValueError, match="not an IP address"):
        media_advertisement("0.0.0.0", "media.example.com", None)


async def _via_of_request_sent(bind: str, advertise: str | None) -> tuple[str, str]:
    """Listen on ``bind``, send an OPTIONS to a UDP socket on loopback; its Via and Contact."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    async with AsyncExitStack() as stack:
        stack.callback(peer.close)
        service = SipService(SipEndpoint({}), reactor)
        stack.callback(service.close)
        listening = await open_listeners(reactor, service, bind, 0, stack)
        service.addresses = advertised(listening, advertise)
        flow = Flow("udp", "127.0.0.1", peer.getsockname()[1])
        headers = Headers()
        for name, value in [
            ("From", "<sip:probe@invalid>;tag=1"),
            ("To", "<sip:peer@127.0.0.1>"),
            ("Call-ID", "advertise-test"),
            ("CSeq", "1 OPTIONS"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:callrouter@{service.sent_by(flow)}>"),
        ]:
            headers.add(name, value)
        service.send_request(Request("OPTIONS", "sip:peer@127.0.0.1", headers), flow)
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 65535), 10)
        message = parse_message(data)
        return str(message.top_via), message.headers.get("contact") or ""


async def test_a_wildcard_bind_writes_the_interface_towards_the_peer() -> None:
    via, contact = await _via_of_request_sent("0.0.0.0", None)
    assert via.startswith("SIP/2.0/UDP 127.0.0.1:") and "0.0.0.0" not in via + contact
    assert contact.startswith("<sip:callrouter@127.0.0.1:")


async def test_an_advertised_address_is_written_instead_of_the_bind_address() -> None:
    via, contact = await _via_of_request_sent("0.0.0.0", "203.0.113.5:5080")
    assert via.startswith("SIP/2.0/UDP 203.0.113.5:5080;branch=z9hG4bK") and ";rport" in via
    assert contact == "<sip:callrouter@203.0.113.5:5080>"


def test_a_multi_homed_host_names_the_interface_on_the_route_to_each_peer() -> None:
    """In a network namespace with two interfaces (root only; CI runs as root), the wildcard
    default gives each peer the address of the interface that reaches it."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"cr-route-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"network namespaces cannot be created here: {made.stderr.strip()}")
    try:
        for device, address in (("carrier0", "198.51.100.1/24"), ("pbx0", "192.0.2.1/24")):
            for command in (
                ["link", "add", device, "type", "veth", "peer", "name", f"{device}peer"],
                ["addr", "add", address, "dev", device],
                ["link", "set", f"{device}peer", "up"],
                ["link", "set", device, "up"],
            ):
                subprocess.run(["ip", "-n", name, *command], check=True, timeout=30)
        script = (
            "from callrouter.transport.advertise import RouteSource\n"
            "route = RouteSource()\n"
            "print(route.towards('198.51.100.50'), route.towards('192.0.2.50'),"
            " route.towards('203.0.113.50'))\n"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", script],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        # No default route: a peer nobody routes to gets loopback, never a wildcard.
        assert result.stdout.split() == ["198.51.100.1", "192.0.2.1", "127.0.0.1"]
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
