"""SIP over UDP (RFC 3261 §18): one datagram is one message."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol

from callrouter.sip.events import Flow
from callrouter.transport.service import SipService

__all__ = ["SipDatagramProtocol"]


class SipDatagramProtocol(DatagramProtocol):
    """Feeds datagrams to the service and sends its datagrams from the same socket."""

    def __init__(self, service: SipService) -> None:
        self.service = service

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        host, port = addr[0], addr[1]
        if datagram.strip(b"\r\n") == b"":
            return  # CRLF keep-alives over UDP (RFC 5626 §4.4.1 uses STUN; some send CRLF)
        self.service.receive(datagram, Flow("udp", host, port))

    def send(self, data: bytes, flow: Flow) -> None:
        socket: Any = self.transport  # zope interfaces do not type-check as methods
        if socket is not None:
            socket.write(data, (flow.host, flow.port))
