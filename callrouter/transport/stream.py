"""SIP over TCP and TLS (RFC 3261 §18.3): framed by Content-Length, one table of connections.

Responses go back on the connection the request came in on (§18.2.2); a request to a peer with
no open connection opens one. A framing error closes the connection: on a stream there is no
way to find the next message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure

from callrouter.sip.errors import ParseError
from callrouter.sip.events import Flow
from callrouter.sip.framing import StreamFramer
from callrouter.transport.service import SipService

__all__ = ["StreamTransport"]

log = logging.getLogger(__name__)


class SipStreamProtocol(Protocol):
    """One TCP or TLS connection."""

    def __init__(self, owner: StreamTransport, max_message_bytes: int) -> None:
        self.owner = owner
        self.framer = StreamFramer(max_message_bytes)
        self.flow: Flow | None = None
        # Twisted's zope interfaces do not type-check as methods; the connection is used as Any.
        self.connection: Any = None

    def connectionMade(self) -> None:
        self.connection = self.transport
        peer = self.connection.getPeer()
        self.flow = Flow(self.owner.name, peer.host, peer.port)
        self.owner.connected(self.flow, self)

    def write(self, data: bytes) -> None:
        if self.connection is not None:
            self.connection.write(data)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        assert self.flow is not None
        try:
            messages = self.framer.feed(data)
        except ParseError as exc:
            log.info("sip: closing %s connection from %s: %s", *self._who(), exc.reason)
            self.close()
            return
        for _ in range(self.framer.take_pongs()):
            self.write(b"\r\n")
        for message in messages:
            self.owner.service.receive(message, self.flow)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connection = None
        if self.flow is not None:
            self.owner.disconnected(self.flow, self)

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
        return SipStreamProtocol(self.owner, self.owner.max_message_bytes)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        dropped = self.owner.pending.pop(self.flow, [])
        log.info("sip: could not reach %s (%d message(s) dropped)", self.flow, len(dropped))


@dataclass(eq=False)
class StreamTransport:
    """The connections of one stream transport (``tcp`` or ``tls``)."""

    name: str
    service: SipService
    reactor: Any
    """The reactor (IReactorTCP, and IReactorSSL for ``tls``)."""
    max_message_bytes: int = 65_535
    tls_client: CertificateOptions | None = None
    connections: dict[Flow, SipStreamProtocol] = field(default_factory=dict)
    pending: dict[Flow, list[bytes]] = field(default_factory=dict)

    def server_factory(self) -> Factory:
        return _Server(self)

    def connected(self, flow: Flow, protocol: SipStreamProtocol) -> None:
        self.connections[flow] = protocol
        for data in self.pending.pop(flow, []):
            protocol.write(data)

    def disconnected(self, flow: Flow, protocol: SipStreamProtocol) -> None:
        if self.connections.get(flow) is protocol:
            del self.connections[flow]

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
            self.reactor.connectSSL(flow.host, flow.port, factory, self.tls_client)
        else:
            self.reactor.connectTCP(flow.host, flow.port, factory)

    def close_all(self) -> None:
        for protocol in list(self.connections.values()):
            protocol.close()
        self.connections.clear()
        self.pending.clear()
