"""RFC 3263 server location against a real DNS server (twisted.names) on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from twisted.names import authority, dns, server

from callrouter.sip.events import Flow
from callrouter.sip.uri import SipUri, parse_uri
from callrouter.transport.listeners import stop_listening
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.resolver import DnsLookup, Resolver, Srv, StaticRoutes, order_srv

ZONE = """
zone = [
    SOA("example.test", mname="ns.example.test", rname="root.example.test", serial=1,
        refresh=60, retry=60, expire=60, minimum=60),
    NAPTR("example.test", order=20, preference=50, flags=b"s", service=b"SIP+D2U", regexp=b"",
          replacement="_sip._udp.example.test"),
    NAPTR("example.test", order=10, preference=50, flags=b"s", service=b"SIP+D2T", regexp=b"",
          replacement="_sip._tcp.example.test"),
    SRV("_sip._tcp.example.test", priority=10, weight=0, port=5070, target="pbx1.example.test"),
    SRV("_sip._udp.example.test", priority=10, weight=0, port=5080, target="pbx1.example.test"),
    SRV("_sip._udp.srvonly.example.test", priority=20, weight=0, port=5090,
        target="pbx2.example.test"),
    SRV("_sip._udp.srvonly.example.test", priority=10, weight=0, port=5091,
        target="pbx1.example.test"),
    SRV("_sips._tcp.secure.example.test", priority=10, weight=0, port=5061,
        target="pbx1.example.test"),
    A("pbx1.example.test", "127.0.0.11"),
    A("pbx2.example.test", "127.0.0.12"),
    A("plain.example.test", "127.0.0.13"),
]
"""


@pytest.fixture
async def dns_server(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    reactor = asyncio_reactor(asyncio.get_running_loop())
    zone = tmp_path / "example.test.py"
    zone.write_text(ZONE)
    factory = server.DNSServerFactory(authorities=[authority.PySourceAuthority(str(zone))])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    try:
        yield "127.0.0.1", port.getHost().port
    finally:
        await stop_listening(port)


def sip(uri: str) -> SipUri:
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    return parsed


async def test_naptr_then_srv_then_a_in_rfc_3263_order(dns_server: tuple[str, int]) -> None:
    resolver = Resolver(DnsLookup([dns_server]))
    flows = await resolver.locate(sip("sip:desk@example.test"))
    # NAPTR order 10 (TCP) before order 20 (UDP); each SRV leads to pbx1's A record.
    assert flows == [Flow("tcp", "127.0.0.11", 5070), Flow("udp", "127.0.0.11", 5080)]


async def test_without_naptr_srv_is_tried_by_priority(dns_server: tuple[str, int]) -> None:
    resolver = Resolver(DnsLookup([dns_server]), transports=("udp",))
    flows = await resolver.locate(sip("sip:desk@srvonly.example.test"))
    assert flows == [Flow("udp", "127.0.0.11", 5091), Flow("udp", "127.0.0.12", 5090)]


async def test_without_srv_the_address_and_default_port(dns_server: tuple[str, int]) -> None:
    resolver = Resolver(DnsLookup([dns_server]))
    assert await resolver.locate(sip("sip:desk@plain.example.test")) == [
        Flow("udp", "127.0.0.13", 5060)
    ]
    assert await resolver.locate(sip("sip:desk@plain.example.test:5099;transport=tcp")) == [
        Flow("tcp", "127.0.0.13", 5099)
    ]
    assert await resolver.locate(sip("sip:desk@nowhere.example.test")) == []


async def test_ip_addresses_and_static_routes_need_no_dns(dns_server: tuple[str, int]) -> None:
    static = StaticRoutes.parse("pbx.internal=tcp:10.0.0.5:5070, pbx.internal=udp:10.0.0.6:5060")
    resolver = Resolver(DnsLookup([dns_server]), static)
    assert await resolver.locate(sip("sip:desk@pbx.internal")) == [
        Flow("tcp", "10.0.0.5", 5070),
        Flow("udp", "10.0.0.6", 5060),
    ]
    assert await resolver.locate(sip("sip:desk@pbx.internal;transport=udp")) == [
        Flow("udp", "10.0.0.6", 5060)
    ]
    assert await resolver.locate(sip("sips:desk@192.0.2.9")) == [
        Flow("tls", "192.0.2.9", 5061, server_name="192.0.2.9")
    ]


async def test_tls_flows_name_the_host_looked_up_not_what_dns_answered(
    dns_server: tuple[str, int],
) -> None:
    """RFC 5922: the certificate must name the SIP domain; the SRV target and the address
    came from DNS, which anyone on the path can forge."""
    static = StaticRoutes.parse("pbx.internal=tls:10.0.0.7:5061, pbx.internal=udp:10.0.0.6:5060")
    resolver = Resolver(DnsLookup([dns_server]), static)
    assert await resolver.locate(sip("sips:desk@secure.example.test")) == [
        Flow("tls", "127.0.0.11", 5061, server_name="secure.example.test")
    ]
    assert await resolver.locate(sip("sip:desk@pbx.internal")) == [
        Flow("tls", "10.0.0.7", 5061, server_name="pbx.internal"),
        Flow("udp", "10.0.0.6", 5060),  # only TLS flows carry a name to verify
    ]
    assert await resolver.locate(sip("sips:desk@[2001:db8::7]:5071")) == [
        Flow("tls", "2001:db8::7", 5071, server_name="2001:db8::7")
    ]


def test_a_bad_static_route_names_the_entry() -> None:
    with pytest.raises(ValueError, match="pbx=udp:nothost:5060"):
        StaticRoutes.parse("pbx=udp:nothost:5060")


def test_srv_weights_order_within_a_priority() -> None:
    records = [Srv(10, 0, 1, "zero"), Srv(10, 100, 2, "heavy"), Srv(5, 0, 3, "first")]
    seen = {tuple(r.target for r in order_srv(records, random.Random(seed))) for seed in range(50)}
    assert all(order[0] == "first" for order in seen)
    assert ("first", "heavy", "zero") in seen
