"""SIP over TCP and TLS (RFC 3261 §18.3): framed by Content-Length, one table of connections.

Responses go back on the connection the request came in on (§18.2.2); a request to a peer with
no open connection opens one. A framing error closes the connection: on a stream there is no
way to find the next message.

A connection costs a descriptor and memory for as long as the peer likes, so inbound ones are
bounded: sources outside every trunk, and banned ones while the ban lasts, are closed at
accept without a byte (a source's connections are aborted as its ban begins), each source and
the listener as a whole have a connection limit, and one deadline per connection closes it when a
TLS handshake, a started message or an idle gap lasts too long (slowloris).

Outbound TLS connections verify the peer (``PeerTls``) as the name their flow carries, or its
IP address when it carries none. A refused connection, or a TLS one whose handshake does not
complete, is a transport error for the requests waiting on it: they fail at once with a 503
(RFC 3261 §8.1.3.1), so a dialplan fails over without waiting for a timer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from callrouter.sip.events import Flow
from callrouter.sip.framing import StreamFramer
from callrouter.transport.peer_tls import PeerTls
from callrouter.transport.service import SipService

__all__ = ["InboundConnections", "StreamLimits", "StreamTransport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Bounds on SIP TCP/TLS connections (the ``[sip]`` settings of the same names)."""

    max_connections: int = 4096
    """Inbound connections open at once, TCP and TLS together."""
    max_connections_per_source: int = 32
    """Inbound connections open at once from one address."""
    idle_timeout: float = 300.0
    """Seconds without any byte between messages before a connection is closed."""
    message_timeout: float = 10.0
    """Seconds a started message may take to arrive in full."""
    handshake_timeout: float = 10.0
    """Seconds a TLS handshake may take."""


@dataclass(eq=False)
class InboundConnections:
    """Inbound connections by source address, shared by the TCP and TLS listeners."""

    limits: StreamLimits = field(default_factory=StreamLimits)
    known: Callable[[str], bool] = field(default=lambda host: True)
    """Whether an address belongs to a trunk; others are closed at accept."""
    banned: Callable[[str], bool] = field(default=lambda host: False)
    """Whether an address is banned now (a flood); closed at accept while the ban lasts."""
    by_source: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """Connections refused at accept by reason (banned, unknown source, per-source limit,
    connection limit), and under banned too those closed as their source's ban began."""
    streams: list[StreamTransport] = field(default_factory=list)
    """The transports sharing these limits (TCP, TLS), whose connections a ban closes."""

    def close_source(self, host: str) -> None:
        """Abort every connection ``host`` opened to us (its ban began).

        Aborted, not closed gracefully: a flooder that stops reading would hold a graceful
        close open on its unsent data."""
        doomed = [
            protocol
            for stream in self.streams
            for flow, protocol in stream.connections.items()
            if protocol.inbound and flow.host == host
        ]
        for protocol in doomed:
            protocol.abort()
        self.refused["banned"] += len(doomed)

    def admit(self, host: str) -> bool:
        reason = self._refusal(host)
        if reason is not None:
            self.refused[reason] += 1
            return False
        self.by_source[host] += 1
        return True

    def release(self, host: str) -> None:
        self.by_source[host] -= 1
        if self.by_source[host] <= 0:
            del self.by_source[host]

    def _refusal(self, host: str) -> str | None:
        if self.banned(host):
            return "banned"
        if not self.known(host):
            return "unknown source"
        if self.by_source[host] >= self.limits.max_connections_per_source:
            return "per-source limit"
        if self.by_source.total() >= self.limits.max_connections:
            return "connection limit"
        return None


@implementer(IHandshakeListener)
class SipStreamProtocol(Protocol):
    """One TCP or TLS connection; ``inbound`` when a peer opened it to our listener."""

    def __init__(
        self, owner: StreamTransport, max_message_bytes: int, *, outbound: Flow | None = None
    ) -> None:
        """:param outbound: the flow we connect to; None for a connection a peer opened."""
        self.owner = owner
        self.framer = StreamFramer(max_message_bytes)
        self.flow: Flow | None = None
        self.outbound = outbound
        self.inbound = outbound is None
        self.admitted = False
        self.handshaken = False
        self.closing = False
        """We closed it ourselves (shutdown): no refusal to report."""
        # Twisted's zope interfaces do not type-check as methods; the connection is used as Any.
        self.connection: Any = None
        self._deadline: Any = None
        """The armed IDelayedCall that closes the connection, and what it waits for."""
        self._waiting_for = ""

    def connectionMade(self) -> None:
        self.connection = self.transport
        peer = self.connection.getPeer()
        if self.inbound:
            if not self.owner.inbound.admit(peer.host):
                # Before any byte is sent: for TLS the handshake has not started yet.
                self.connection.abortConnection()
                return
            self.admitted = True
        # Ours keep the flow they were opened for: its server name is part of its identity.
        self.flow = self.outbound or Flow(self.owner.name, peer.host, peer.port)
        self.owner.connected(self.flow, self)
        limits = self.owner.limits
        if self.owner.name == "tls":
            self._arm(limits.handshake_timeout, "the TLS handshake")
        else:
            self._arm(limits.idle_timeout, "a message")

    def handshakeCompleted(self) -> None:
        self.handshaken = True
        self._arm(self.owner.limits.idle_timeout, "a message")

    def write(self, data: bytes) -> None:
        if self.connection is not None:
            self.connection.write(data)

    def close(self) -> None:
        self.closing = True
        if self.connection is not None:
            self.connection.loseConnection()

    def abort(self) -> None:
        """Close at once, unsent data dropped (a banned source)."""
        self.closing = True
        if self.connection is not None:
            log.info("sip: closing %s connection from %s: its source is banned", *self._who())
            self.connection.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.flow is None:
            return  # refused at connect
        messages = self.framer.feed(data)
        failed = self.framer.failed
        if failed is not None:
            for message in messages:
                self.owner.service.receive(message, self.flow)
            log.info("sip: closing %s connection from %s: %s", *self._who(), failed.reason)
            # The 513 (when one can be sent) is written before the close, which flushes it.
            self.owner.service.framing_failed(failed, self.flow)
            self.close()
            return
        limits = self.owner.limits
        if not self.framer.partial:
            self._arm(limits.idle_timeout, "a message")
        elif self._waiting_for != "the rest of a message":
            # Armed once when a message starts, not per byte: trickling keeps no one alive.
            self._arm(limits.message_timeout, "the rest of a message")
        for _ in range(self.framer.take_pongs()):
            self.write(b"\r\n")
        for message in messages:
            self.owner.service.receive(message, self.flow)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connection = None
        self._disarm()
        if self.admitted:
            self.admitted = False
            assert self.flow is not None
            self.owner.inbound.release(self.flow.host)
        if self.flow is not None:
            self.owner.disconnected(self.flow, self)
        outbound = None if self.closing else self.outbound
        if outbound is not None and self.owner.name == "tls" and not self.handshaken:
            self.owner.tls_refused(outbound, reason)

    def _arm(self, seconds: float, waiting_for: str) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = self.owner.reactor.callLater(seconds, self._expired, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, seconds: float) -> None:
        self._deadline = None
        log.info(
            "sip: closing %s connection from %s: waited %g s for %s",
            *self._who(),
            seconds,
            self._waiting_for,
        )
        if self.connection is not None:
            self.connection.abortConnection()

    def _who(self) -> tuple[str, str]:
        assert self.flow is not None
        return self.flow.transport, f"{self.flow.host}:{self.flow.port}"


class _Server(Factory):
    def __init__(self, owner: StreamTransport) -> None:
        self.owner = owner

    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        return SipStreamProtocol(self.owner, self.owner.max_message_bytes)


class _Client(ClientFactory):
    def __init__(self, owner: StreamTransport, flow: Flow) -> None:
        self.owner = owner
        self.flow = flow

    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        return SipStreamProtocol(self.owner, self.owner.max_message_bytes, outbound=self.flow)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        dropped = self.owner.pending.pop(self.flow, [])
        log.info("sip: could not reach %s (%d message(s) dropped)", self.flow, len(dropped))
        self.owner.service.transport_failed(self.flow, f"Unreachable ({reason.getErrorMessage()})")


@dataclass(eq=False)
class StreamTransport:
    """The connections of one stream transport (``tcp`` or ``tls``)."""

    name: str
    service: SipService
    reactor: Any
    """The reactor (IReactorTCP, and IReactorSSL for ``tls``)."""
    max_message_bytes: int = 65_535
    peer_tls: PeerTls = field(default_factory=PeerTls)
    """How the peers of our outbound TLS connections are verified."""
    inbound: InboundConnections = field(default_factory=InboundConnections)
    """Shared with the other stream transport, so the limits count TCP and TLS together."""
    connections: dict[Flow, SipStreamProtocol] = field(default_factory=dict)
    pending: dict[Flow, list[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inbound.streams.append(self)

    @property
    def limits(self) -> StreamLimits:
        return self.inbound.limits

    def server_factory(self) -> Factory:
        return _Server(self)

    def connected(self, flow: Flow, protocol: SipStreamProtocol) -> None:
        self.connections[flow] = protocol
        for data in self.pending.pop(flow, []):
            protocol.write(data)

    def disconnected(self, flow: Flow, protocol: SipStreamProtocol) -> None:
        if self.connections.get(flow) is protocol:
            del self.connections[flow]

    def tls_refused(self, flow: Flow, reason: Failure | None) -> None:
        """Our TLS connection to ``flow`` ended before its handshake completed: say why once,
        and fail the requests that waited for it."""
        name = flow.server_name or flow.host
        refusal = self.peer_tls.refusal(name, reason)
        log.warning(
            "sip: TLS peer %s at %s:%d refused: %s", name, flow.host, flow.port, refusal.detail
        )
        self.service.transport_failed(flow, f"TLS peer refused ({refusal.detail})")

    def send(self, data: bytes, flow: Flow) -> None:
        protocol = self.connections.get(flow)
        if protocol is not None and protocol.connection is not None:
            protocol.write(data)
            return
        queued = self.pending.setdefault(flow, [])
        queued.append(data)
        if len(queued) > 1:
            return  # a connection attempt is already under way
        factory = _Client(self, flow)
        if self.name == "tls":
            options = self.peer_tls.options_for(flow.server_name or flow.host)
            self.reactor.connectSSL(flow.host, flow.port, factory, options)
        else:
            self.reactor.connectTCP(flow.host, flow.port, factory)

    def close_all(self) -> None:
        for protocol in list(self.connections.values()):
            protocol.close()
        self.connections.clear()
        self.pending.clear()
