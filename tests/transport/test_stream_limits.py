"""Who may hold a SIP TCP/TLS connection (trunk sources only, within per-source and total
limits, none while banned) and how big a message on one may be; on a clock the test moves."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from callrouter.ip_networks import parse_networks
from callrouter.routing.source_policy import MethodRate, SourcePolicy
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Event, Flow, RequestReceived
from callrouter.sip.message import Limits
from callrouter.sip.pike import FloodLimit, Pike
from callrouter.transport.service import SipService
from callrouter.transport.stream import InboundConnections, StreamLimits, StreamTransport


def test_unknown_sources_and_connections_over_the_limits_are_refused() -> None:
    inbound = InboundConnections(
        StreamLimits(max_connections=3, max_connections_per_source=2),
        known=lambda host: host.startswith("192.0.2."),
    )
    assert not inbound.admit("203.0.113.9")
    assert [inbound.admit("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert inbound.admit("192.0.2.2")
    assert not inbound.admit("192.0.2.3")  # three open in all
    inbound.release("192.0.2.1")
    assert inbound.admit("192.0.2.3")
    assert inbound.by_source == {"192.0.2.1": 1, "192.0.2.2": 1, "192.0.2.3": 1}
    assert inbound.refused == {"unknown source": 1, "per-source limit": 1, "connection limit": 1}


def options(n: int, padding: int = 0) -> bytes:
    return (
        "OPTIONS sip:192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.7:40000;branch=z9hG4bK-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:ping@192.0.2.7>;tag=p{n}\r\n"
        "To: <sip:192.0.2.1>\r\n"
        f"Call-ID: ping-{n}@192.0.2.7\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"X-Filler: {'x' * padding}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Router:
    """The real endpoint, source policy and stream transport, a trunk of 192.0.2.0/24 with a
    carrier flood limit of 10 requests in 2 s, and messages of at most 2,000 bytes."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.policy = SourcePolicy(
            TrunkTable(Trunk("carrier", parse_networks("192.0.2.0/24"))),
            MethodRate(1000.0, 1000.0),
            FloodLimit(4, 2.0),
            FloodLimit(10, 2.0),
            Pike(ban_seconds=60.0),
        )
        endpoint = SipEndpoint(
            {"tcp": "192.0.2.1:5060"}, limits=Limits(2000), admission=self.policy
        )
        self.service = SipService(endpoint, self.clock, handler=self.answer)
        self.inbound = InboundConnections(
            StreamLimits(),
            self.policy.admits_source,
            banned=lambda host: self.policy.banned(host, self.clock.seconds()),
        )
        self.policy.on_ban = self.inbound.close_source
        self.streams = StreamTransport(
            "tcp", self.service, self.clock, max_message_bytes=2000, inbound=self.inbound
        )
        self.service.senders["tcp"] = self.streams

    def answer(self, event: Event) -> None:
        """The layer above: every request gets 200."""
        if isinstance(event, RequestReceived):
            self.service.respond(event.transaction_id, event.request.response(200, to_tag="t"))

    def connect(self, host: str = "192.0.2.7", port: int = 40000) -> StringTransport:
        protocol = self.streams.server_factory().buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return transport

    def send(self, transport: StringTransport, data: bytes) -> None:
        (protocol,) = [p for p in self.streams.connections.values() if p.connection is transport]
        protocol.dataReceived(data)


def aborted(transport: StringTransport) -> bool:
    """Closed at once, as a reset (StringTransport marks ``abortConnection`` so)."""
    return bool(transport.disconnected)


def test_a_ban_aborts_the_sources_connections_and_refuses_new_ones_while_it_lasts() -> None:
    router = Router()
    flooder, other_port = router.connect(), router.connect(port=40001)
    neighbour = router.connect("192.0.2.8")
    router.send(flooder, b"".join(options(n) for n in range(10)))
    assert not aborted(flooder) and flooder.value().count(b"SIP/2.0 200 OK") == 10
    router.send(flooder, options(10))  # the eleventh in 2 s
    # Both of the source's connections go at once, the neighbour's stays.
    assert aborted(flooder) and aborted(other_port) and not aborted(neighbour)
    assert router.inbound.refused == {"banned": 2}
    assert router.policy.rejected["banned"] == 1
    # connectionLost, as the reactor would call it, releases the slots.
    for protocol in list(router.streams.connections.values()):
        if protocol.connection in (flooder, other_port):
            protocol.connectionLost(None)
    assert router.inbound.by_source == {"192.0.2.8": 1}

    again = router.connect()
    assert aborted(again) and again.value() == b""  # refused at accept, without a byte
    assert router.inbound.refused == {"banned": 3}
    router.clock.advance(61)
    assert not aborted(router.connect())  # the ban is over


def test_a_message_over_max_message_bytes_gets_513_and_its_connection_closes() -> None:
    router = Router()
    carrier = router.connect()
    small = options(1, padding=1500)
    assert len(small) < 2000
    router.send(carrier, small)
    assert carrier.value().startswith(b"SIP/2.0 200 OK\r\n") and not aborted(carrier)
    carrier.clear()
    # One under the limit, then one over it in the same read: the first is still answered.
    router.send(carrier, options(2) + options(3, padding=2500))
    replies = carrier.value().split(b"SIP/2.0 ")[1:]
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"200 OK", b"513 Message Too Large"]
    assert b"branch=z9hG4bK-3" in replies[1]
    assert carrier.disconnecting and not aborted(carrier)  # closed after the 513 is written
    assert router.policy.rejected["malformed"] == 1


def test_a_head_over_max_message_bytes_closes_the_connection_unanswered() -> None:
    router = Router()
    carrier = router.connect()
    router.send(carrier, b"OPTIONS sip:192.0.2.1 SIP/2.0\r\nX-Filler: " + b"x" * 2100)
    assert carrier.disconnecting and carrier.value() == b""


def test_a_datagram_over_max_message_bytes_gets_513_too() -> None:
    router = Router()
    sent: list[bytes] = []

    class Wire:
        def send(self, data: bytes, flow: object) -> None:
            sent.append(data)

    router.service.senders["udp"] = Wire()
    router.service.receive(options(4, padding=2500), Flow("udp", "192.0.2.7", 5060))
    assert len(sent) == 1 and sent[0].startswith(b"SIP/2.0 513 Message Too Large\r\n")
