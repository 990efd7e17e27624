"""Opening and closing the SIP listening sockets (UDP, TCP and optionally TLS) on one reactor."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.ssl import CertificateOptions, PrivateCertificate

from callrouter.transport.service import SipService
from callrouter.transport.stream import StreamTransport
from callrouter.transport.udp import SipDatagramProtocol

__all__ = ["Listening", "open_listeners", "tls_options"]


@dataclass(frozen=True, slots=True)
class Listening:
    """One open listener."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port};transport={self.transport}"


def tls_options(certificate: Path, private_key: Path) -> CertificateOptions:
    """TLS server options from PEM files (the chain's first certificate is ours)."""
    pem = certificate.read_bytes() + b"\n" + private_key.read_bytes()
    cert: Any = PrivateCertificate.loadPEM(pem)  # type: ignore[no-untyped-call]
    options: CertificateOptions = cert.options()
    return options


async def open_listeners(
    reactor: Any,
    service: SipService,
    host: str,
    port: int,
    stack: AsyncExitStack,
    *,
    tls_port: int | None = None,
    tls: CertificateOptions | None = None,
) -> list[Listening]:
    """Listen for SIP on UDP and TCP (the same port; with port 0 the UDP port is picked first and
    TCP takes the same number) and on TLS when configured. Closed when ``stack`` unwinds."""
    udp = SipDatagramProtocol(service)
    udp_port = reactor.listenUDP(port, udp, interface=host, maxPacketSize=65535)
    stack.push_async_callback(_stop, udp_port)
    bound = udp_port.getHost().port
    service.senders["udp"] = udp
    opened = [Listening("udp", host, bound)]

    tcp = StreamTransport("tcp", service, reactor)
    tcp_port = reactor.listenTCP(bound, tcp.server_factory(), interface=host)
    stack.push_async_callback(_stop, tcp_port)
    stack.callback(tcp.close_all)
    service.senders["tcp"] = tcp
    opened.append(Listening("tcp", host, tcp_port.getHost().port))

    if tls is not None and tls_port is not None:
        secure = StreamTransport("tls", service, reactor, tls_client=CertificateOptions())
        tls_listener = reactor.listenSSL(tls_port, secure.server_factory(), tls, interface=host)
        stack.push_async_callback(_stop, tls_listener)
        stack.callback(secure.close_all)
        service.senders["tls"] = secure
        opened.append(Listening("tls", host, tls_listener.getHost().port))
    return opened


async def _stop(listener: Any) -> None:
    stopped = listener.stopListening()
    if isinstance(stopped, defer.Deferred):
        await stopped.asFuture(asyncio.get_running_loop())
