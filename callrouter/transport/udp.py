"""SIP over UDP (RFC 3261 §18): one datagram is one message."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from callrouter.sip.events import Flow
from callrouter.transport.service import SipService

__all__ = ["RECEIVE_BUFFER_BYTES", "SipDatagramProtocol"]

RECEIVE_BUFFER_BYTES = 8 << 20
"""Asked of the kernel for the socket's receive queue (it grants up to net.core.rmem_max): a
flood arrives faster than Python drains it, and a queue that overflows drops the carriers'
packets with the flooder's before the ban can tell them apart."""


class SipDatagramProtocol(DatagramProtocol):
    """Feeds datagrams to the service and sends its datagrams from the same socket."""

    def __init__(self, service: SipService) -> None:
        self.service = service

    def startProtocol(self) -> None:
        handle: Any = self.transport  # zope interfaces do not type-check as methods
        handle.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        host, port = addr[0], addr[1]
        if datagram.strip(b"\r\n") == b"":
            return  # CRLF keep-alives over UDP (RFC 5626 §4.4.1 uses STUN; some send CRLF)
        self.service.receive(datagram, Flow("udp", host, port))

    def send(self, data: bytes, flow: Flow) -> None:
        port: Any = self.transport  # zope interfaces do not type-check as methods
        if port is not None:
            port.write(data, (flow.host, flow.port))
