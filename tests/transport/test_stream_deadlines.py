"""SIP TCP/TLS connection deadlines on a clock the test moves (no real time, no sockets)."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from callrouter.sip.endpoint import SipEndpoint
from callrouter.transport.service import SipService
from callrouter.transport.stream import InboundConnections, StreamLimits, StreamTransport

LIMITS = StreamLimits(idle_timeout=30.0, message_timeout=5.0, handshake_timeout=3.0)
OPTIONS_HEAD = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.7:40000;branch=z9hG4bK1\r\n"
)


def accepted(name: str, host: str = "192.0.2.7") -> tuple[Clock, StreamTransport, StringTransport]:
    clock = Clock()
    inbound = InboundConnections(LIMITS, known=lambda source: source.startswith("192.0.2."))
    streams = StreamTransport(name, SipService(SipEndpoint({}), clock), clock, inbound=inbound)
    protocol = streams.server_factory().buildProtocol(IPv4Address("TCP", host, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    protocol.makeConnection(transport)
    return clock, streams, transport


def test_a_silent_connection_is_closed_after_the_idle_timeout_and_keepalives_count() -> None:
    clock, streams, transport = accepted("tcp")
    clock.advance(29)
    streams.connections[next(iter(streams.connections))].dataReceived(b"\r\n\r\n")  # RFC 5626 ping
    clock.advance(29)
    assert not transport.disconnected
    clock.advance(2)
    assert transport.disconnected
    assert transport.value() == b"\r\n"  # the pong, and nothing else


def test_a_trickled_message_is_cut_off_however_often_bytes_arrive() -> None:
    clock, streams, transport = accepted("tcp")
    protocol = streams.connections[next(iter(streams.connections))]
    protocol.dataReceived(OPTIONS_HEAD)
    for _ in range(4):
        clock.advance(1)
        protocol.dataReceived(b"X")
    assert not transport.disconnected
    clock.advance(1.5)
    assert transport.disconnected


def test_a_tls_handshake_has_its_own_shorter_deadline() -> None:
    clock, streams, transport = accepted("tls")
    clock.advance(3.5)
    assert transport.disconnected
    clock, streams, transport = accepted("tls")
    streams.connections[next(iter(streams.connections))].handshakeCompleted()
    clock.advance(29)
    assert not transport.disconnected  # after the handshake the idle timeout applies


def test_an_unknown_source_is_closed_at_accept_without_a_byte() -> None:
    clock, streams, transport = accepted("tcp", host="203.0.113.9")
    assert transport.disconnected and transport.value() == b""
    assert streams.connections == {}
    assert clock.getDelayedCalls() == []
