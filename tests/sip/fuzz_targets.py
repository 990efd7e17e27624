"""Fuzz targets for the SIP core, shared by the bounded CI run (test_fuzz.py) and the long run
(bench/fuzz_sip.py): each takes fuzzed input and raises only when a defect shows.

The contract they check: the parsers raise nothing but their own ``ParseError``; the transaction
layer, fed through the same ``SipService`` the UDP and TCP transports use, lets no exception at
all escape, whatever arrives and whenever its timers fire.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st
from twisted.internet.task import Clock

from callrouter.ip_networks import parse_networks
from callrouter.routing.source_policy import MethodRate, SourcePolicy
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.errors import ParseError
from callrouter.sip.events import Event, Flow, RequestReceived
from callrouter.sip.message import parse_message
from callrouter.sip.pike import FloodLimit, Pike
from callrouter.sip.sdp import parse_sdp
from callrouter.sip.transactions import Timers
from callrouter.transport.service import SipService
from tests.sip.messages import SDP, invite, options

VECTORS = Path(__file__).parent / "vectors"
CORPUS = [p.read_bytes() for p in sorted(VECTORS.rglob("*.dat"))]
CORPUS += [invite().to_bytes(), options().to_bytes()]
SDP_CORPUS = [SDP, SDP.replace(b"IP4 192.0.2.10", b"IP6 2001:db8::1"), b"v=0\r\n"]
JUNK = [b"\r\n", b":", b";", b",", b'"', b"<", b">", b" ", b"\x00", b"\xff", b"=", b"%"]
SOURCES = [Flow("udp", "192.0.2.10", 5060), Flow("udp", "203.0.113.5", 5060)]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes] = CORPUS) -> bytes:
    """A corpus message with bytes flipped, cut, duplicated or inserted."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 40))]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 40))]
        else:
            data[i:i] = draw(st.sampled_from(JUNK))
    return bytes(data)


sip_inputs = st.one_of(st.binary(max_size=600), mutated())
sdp_inputs = st.one_of(st.binary(max_size=300), mutated(SDP_CORPUS))
exchanges = st.lists(
    st.tuples(sip_inputs, st.sampled_from(SOURCES), st.floats(0, 5)), min_size=1, max_size=8
)


def parse_target(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError:
        return
    message.to_bytes()


def sdp_target(data: bytes) -> None:
    try:
        description = parse_sdp(data)
    except ParseError:
        return
    description.anchor("198.51.100.1", [40000 + 2 * i for i in range(len(description.media))])
    description.to_bytes()


class _Wire:
    """Stands in for a socket: counts what the service sends."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, data: bytes, flow: Flow) -> None:
        self.sent += 1


def transport_target(exchange: list[tuple[bytes, Flow, float]]) -> tuple[int, int]:
    """Datagrams through ``SipService.receive`` as the UDP transport delivers them, a layer
    above that answers every request, then every timer run out. Returns the requests handed up
    and the datagrams sent."""
    clock = Clock()
    policy = SourcePolicy(
        TrunkTable(Trunk("config", parse_networks("192.0.2.0/24"))),
        MethodRate(50.0, 200.0),
        FloodLimit(16, 2.0),
        FloodLimit(4000, 2.0),
        Pike(300.0),
    )
    endpoint = SipEndpoint({"udp": "198.51.100.1:5060"}, Timers(), admission=policy)
    service = SipService(endpoint, clock)
    wire = _Wire()
    service.senders["udp"] = wire

    handed_up = []

    def answer(event: Event) -> None:
        if isinstance(event, RequestReceived):
            handed_up.append(event)
            status = 200 if event.request.method != "INVITE" else 486
            service.respond(event.transaction_id, event.request.response(status, to_tag="t1"))

    service.handler = answer
    for data, flow, delay in exchange:
        clock.advance(delay)
        service.receive(data, flow)
    for _ in range(200):  # every transaction ends within Timer B/F/H/J, 64*T1
        if not clock.getDelayedCalls():
            break
        clock.advance(max(0.0, min(c.getTime() for c in clock.getDelayedCalls()) - clock.seconds()))
    assert endpoint.transaction_count == 0
    return len(handed_up), wire.sent
