"""Opening and closing the SIP listening sockets (UDP, TCP and optionally TLS) on one reactor."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import ContextFactory

from callrouter.transport.advertise import Advertisement, LocalAddresses
from callrouter.transport.peer_tls import PeerTls
from callrouter.transport.service import SipService
from callrouter.transport.stream import InboundConnections, StreamTransport
from callrouter.transport.udp import SipDatagramProtocol

__all__ = [
    "Listening",
    "ServerTls",
    "advertised",
    "open_listeners",
    "stop_listening",
    "tls_options",
]


@dataclass(frozen=True, slots=True)
class Listening:
    """One open listener."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port};transport={self.transport}"


# TLS 1.2 suites with an ephemeral (EC)DHE key exchange only, AEAD ciphers first: a stolen
# server key must not decrypt recorded past sessions (forward secrecy; RFC 9325 §4.2). TLS 1.3
# suites are all ephemeral and are negotiated first whenever the peer offers TLS 1.3.
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1"


class ServerTls(ContextFactory):
    """TLS 1.2+ server context from PEM files: a certificate chain and its private key.

    Built directly on pyOpenSSL from the files, so no certificate object passes through the
    deprecated pyOpenSSL X509 API.
    """

    def __init__(self, certificate: Path, private_key: Path) -> None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(TLS12_CIPHERS)
        context.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
        context.use_certificate_chain_file(str(certificate))
        context.use_privatekey_file(str(private_key))
        context.check_privatekey()  # a key that does not match the certificate fails at start
        self._context = context

    def getContext(self) -> SSL.Context:  # Twisted's name
        return self._context


def tls_options(certificate: Path, private_key: Path) -> ServerTls:
    """The TLS server context for the configured files; OSError or SSL.Error when unusable."""
    return ServerTls(certificate, private_key)


PORT_PICKS = 16
"""UDP ports tried with port 0 before giving up on finding one whose TCP number is free."""


async def open_listeners(
    reactor: Any,
    service: SipService,
    host: str,
    port: int,
    stack: AsyncExitStack,
    *,
    tls_port: int | None = None,
    tls: ServerTls | None = None,
    inbound: InboundConnections | None = None,
    peer_tls: PeerTls | None = None,
    backlog: int = 1024,
    max_message_bytes: int = 65_535,
) -> list[Listening]:
    """Listen for SIP on UDP and TCP (the same port; with port 0 the UDP port is picked first and
    TCP takes the same number, picking again when TCP cannot) and on TLS when configured.
    Closed when ``stack`` unwinds.

    :param inbound: who may connect over TCP and TLS, how often and how long (no limits: the
        defaults of ``StreamLimits``, every source known).
    :param peer_tls: how the peers of our outbound TLS connections are verified (None: against
        the system's trust store).
    :param backlog: the listen queue of the TCP and TLS sockets (the kernel caps it at
        net.core.somaxconn).
    :param max_message_bytes: the largest message framed on TCP and TLS (``[sip]
        max_message_bytes``, which the parser applies to datagrams).
    """
    inbound = inbound if inbound is not None else InboundConnections()
    tcp = StreamTransport(
        "tcp", service, reactor, max_message_bytes=max_message_bytes, inbound=inbound
    )
    refused: list[Any] = []
    """UDP ports picked whose number TCP could not have: held until a pair is found, so the
    kernel does not hand the same one back."""
    try:
        while True:
            udp = SipDatagramProtocol(service)
            udp_port = reactor.listenUDP(port, udp, interface=host, maxPacketSize=65535)
            bound = udp_port.getHost().port
            try:
                tcp_port = reactor.listenTCP(
                    bound, tcp.server_factory(), backlog=backlog, interface=host
                )
                break
            except CannotListenError:
                # With port 0 the UDP number is the kernel's pick, and a TCP listener (another
                # server's HTTP port, say) may hold it: pick again. A configured port fails.
                refused.append(udp_port)
                if port != 0 or len(refused) >= PORT_PICKS:
                    raise
    finally:
        for held in refused:
            await stop_listening(held)
    stack.push_async_callback(stop_listening, udp_port)
    service.senders["udp"] = udp
    opened = [Listening("udp", host, bound)]
    stack.push_async_callback(stop_listening, tcp_port)
    stack.callback(tcp.close_all)
    service.senders["tcp"] = tcp
    opened.append(Listening("tcp", host, tcp_port.getHost().port))

    if tls is not None and tls_port is not None:
        secure = StreamTransport(
            "tls",
            service,
            reactor,
            max_message_bytes=max_message_bytes,
            peer_tls=peer_tls or PeerTls(),
            inbound=inbound,
        )
        tls_listener = reactor.listenSSL(
            tls_port, secure.server_factory(), tls, backlog=backlog, interface=host
        )
        stack.push_async_callback(stop_listening, tls_listener)
        stack.callback(secure.close_all)
        service.senders["tls"] = secure
        opened.append(Listening("tls", host, tls_listener.getHost().port))
    return opened


def advertised(
    listening: list[Listening], advertise: str | None, tls_advertise: str | None = None
) -> LocalAddresses:
    """What each listener writes for peers: ``advertise`` (a port in it stands for the UDP and
    TCP port; TLS keeps its own, or takes ``tls_advertise``, the name on its certificate),
    else its bind address unless that is a wildcard.

    :raises ValueError: when an address cannot be read.
    """
    addresses = LocalAddresses()
    for opened in listening:
        listener = Advertisement.of(opened.host, opened.port, advertise)
        if opened.transport == "tls":
            listener = (
                Advertisement.of(opened.host, opened.port, tls_advertise)
                if tls_advertise
                else Advertisement(listener.host, opened.port)
            )
        addresses.listeners[opened.transport] = listener
    return addresses


async def stop_listening(listener: Any) -> None:
    """Close a Twisted listening port and wait until it is closed."""
    stopped = listener.stopListening()
    if isinstance(stopped, defer.Deferred):
        await stopped.asFuture(asyncio.get_running_loop())
