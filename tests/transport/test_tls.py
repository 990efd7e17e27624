"""SIP over TLS: a real TLS listener with a certificate from files, a real TLS client that
verifies it (RFC 5922), certificates made by the test."""

from __future__ import annotations

import asyncio
import socket
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Event, Flow, ResponseReceived
from callrouter.sip.message import Response
from callrouter.transport.listeners import open_listeners, tls_options
from callrouter.transport.peer_tls import PeerTls, trust_root
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.service import SipService
from callrouter.transport.stream import StreamTransport
from tests.sip.messages import options
from tests.transport.certificates import Authority, self_signed
from tests.transport.responder import Responder


async def tls_responder(
    stack: AsyncExitStack, reactor: Any, cert: Path, key: Path
) -> tuple[Responder, int]:
    """A SIP responder on a TLS listener with this certificate; its TLS port."""
    uas = Responder(reactor)
    stack.callback(uas.service.close)
    listening = await open_listeners(
        reactor, uas.service, "127.0.0.1", 0, stack, tls_port=0, tls=tls_options(cert, key)
    )
    return uas, next(opened.port for opened in listening if opened.transport == "tls")


@dataclass
class TlsClient:
    """A SIP client whose outbound TLS trusts ``ca_file`` alone; ``answered`` gets its events."""

    service: SipService
    transport: StreamTransport
    answered: asyncio.Queue[Event]

    @classmethod
    def start(cls, stack: AsyncExitStack, reactor: Any, ca_file: Path) -> TlsClient:
        answered: asyncio.Queue[Event] = asyncio.Queue()
        service = SipService(SipEndpoint({"tls": "127.0.0.1:5061"}), reactor, answered.put_nowait)
        transport = StreamTransport("tls", service, reactor, peer_tls=PeerTls(trust_root(ca_file)))
        service.senders["tls"] = transport
        stack.callback(transport.close_all)
        stack.callback(service.close)
        return cls(service, transport, answered)

    async def ask(self, flow: Flow, branch: str = "z9hG4bK-ping-1") -> Response:
        """Send OPTIONS to ``flow``; the final response, a peer's or the transport's 503."""
        request = options(branch)
        request.headers.pop_first("via")
        self.service.send_request(request, flow)
        while True:
            event = await asyncio.wait_for(self.answered.get(), 30)
            if isinstance(event, ResponseReceived) and event.response.status >= 200:
                return event.response


async def test_a_peer_whose_certificate_the_ca_signed_for_its_name_is_reached(
    tmp_path: Path,
) -> None:
    reactor = asyncio_reactor(asyncio.get_running_loop())
    ca = Authority(tmp_path)
    async with AsyncExitStack() as stack:
        uas, port = await tls_responder(stack, reactor, *ca.issue("pbx", "pbx.example.test"))
        client = TlsClient.start(stack, reactor, ca.certificate)
        answer = await client.ask(Flow("tls", "127.0.0.1", port, "pbx.example.test"))
        assert answer.status == 200 and uas.seen == ["OPTIONS"]
        assert client.transport.peer_tls.refused == {}


async def test_a_self_signed_peer_is_refused_before_any_sip_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The certificate names the host, but nothing we trust signed it: anyone can make one."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    ca = Authority(tmp_path)
    forged = tmp_path / "forged"
    forged.mkdir()
    async with AsyncExitStack() as stack:
        uas, port = await tls_responder(
            stack, reactor, *self_signed(forged, names=("pbx.example.test",))
        )
        client = TlsClient.start(stack, reactor, ca.certificate)
        answer = await client.ask(Flow("tls", "127.0.0.1", port, "pbx.example.test"))
        assert answer.status == 503 and "trusted root" in answer.reason
        assert uas.seen == []  # the OPTIONS never left: the handshake failed first
        assert client.transport.peer_tls.refused == {"chain": 1}
        assert client.transport.connections == {}
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert refusals == [
            f"sip: TLS peer pbx.example.test at 127.0.0.1:{port} refused: its certificate does "
            "not lead to a trusted root (unknown issuer, self-signed or expired)"
        ]


async def test_a_peer_with_a_good_chain_for_another_name_is_refused(tmp_path: Path) -> None:
    """A certificate our CA issued to someone else: a man in the middle with a real one."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    ca = Authority(tmp_path)
    async with AsyncExitStack() as stack:
        uas, port = await tls_responder(stack, reactor, *ca.issue("other", "other.example.test"))
        client = TlsClient.start(stack, reactor, ca.certificate)
        answer = await client.ask(Flow("tls", "127.0.0.1", port, "pbx.example.test"))
        assert answer.status == 503
        assert "does not name pbx.example.test" in answer.reason
        assert uas.seen == [] and client.transport.peer_tls.refused == {"name": 1}


async def test_an_ip_literal_target_is_checked_against_the_ip_in_the_certificate(
    tmp_path: Path,
) -> None:
    reactor = asyncio_reactor(asyncio.get_running_loop())
    ca = Authority(tmp_path)
    async with AsyncExitStack() as stack:
        by_ip, ip_port = await tls_responder(stack, reactor, *ca.issue("ip", "127.0.0.1"))
        by_name, name_port = await tls_responder(
            stack, reactor, *ca.issue("named", "pbx.example.test")
        )
        client = TlsClient.start(stack, reactor, ca.certificate)
        # sips:127.0.0.1 resolves to a flow named by its IP; one with no name is checked the same.
        reached = await client.ask(Flow("tls", "127.0.0.1", ip_port, "127.0.0.1"))
        assert reached.status == 200 and by_ip.seen == ["OPTIONS"]
        refused = await client.ask(Flow("tls", "127.0.0.1", name_port), "z9hG4bK-ping-2")
        assert refused.status == 503 and "does not name 127.0.0.1" in refused.reason
        assert by_name.seen == []


async def test_a_verified_connection_carries_only_requests_for_its_own_name(
    tmp_path: Path,
) -> None:
    """Two SIP domains at one address: the connection verified as pbx.example.test is not
    lent to a request for other.example.test, which must prove that name itself."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    ca = Authority(tmp_path)
    async with AsyncExitStack() as stack:
        uas, port = await tls_responder(stack, reactor, *ca.issue("pbx", "pbx.example.test"))
        client = TlsClient.start(stack, reactor, ca.certificate)
        named = Flow("tls", "127.0.0.1", port, "pbx.example.test")
        assert (await client.ask(named)).status == 200
        other = Flow("tls", "127.0.0.1", port, "other.example.test")
        assert (await client.ask(other, "z9hG4bK-ping-2")).status == 503
        assert (await client.ask(named, "z9hG4bK-ping-3")).status == 200
        assert uas.seen == ["OPTIONS", "OPTIONS"]
        assert list(client.transport.connections) == [named]


async def test_a_refused_connection_fails_the_request_at_once(tmp_path: Path) -> None:
    """Nothing listens there: a 503 now (RFC 3261 §8.1.3.1), not Timer F's 32 s of silence."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    ca = Authority(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AsyncExitStack() as stack:
        client = TlsClient.start(stack, reactor, ca.certificate)
        answer = await client.ask(Flow("tls", "127.0.0.1", port, "pbx.example.test"))
        assert answer.status == 503 and answer.reason.startswith("Unreachable (")
        assert client.service.endpoint.transaction_count == 0
        assert client.transport.peer_tls.refused == {}  # not a TLS refusal: nobody answered


async def test_a_self_signed_certificate_in_the_ca_file_pins_that_peer(tmp_path: Path) -> None:
    """How an operator trusts one private PBX without turning verification off."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    cert, key = self_signed(tmp_path)
    async with AsyncExitStack() as stack:
        uas, port = await tls_responder(stack, reactor, cert, key)
        client = TlsClient.start(stack, reactor, cert)
        answer = await client.ask(Flow("tls", "127.0.0.1", port, "127.0.0.1"))
        assert answer.status == 200 and uas.seen == ["OPTIONS"]


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "ca.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError):
        trust_root(empty)
    with pytest.raises(OSError):
        trust_root(tmp_path / "missing.pem")


def tls12_client(ciphers: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


async def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """(protocol version, cipher) the server agreed to with this client context."""
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 30)
    try:
        connection = writer.get_extra_info("ssl_object")
        return connection.version(), connection.cipher()[0]
    finally:
        writer.close()


async def test_tls_refuses_static_rsa_and_prefers_forward_secrecy(tmp_path: Path) -> None:
    """RFC 9325 §4.2: TLS 1.2 only with ECDHE, so a stolen key opens no recorded session."""
    reactor = asyncio_reactor(asyncio.get_running_loop())
    cert, key = self_signed(tmp_path, rsa_key=True)  # an RSA key could do static RSA
    async with AsyncExitStack() as stack:
        uas = Responder(reactor)
        stack.callback(uas.service.close)
        listening = await open_listeners(
            reactor, uas.service, "127.0.0.1", 0, stack, tls_port=0, tls=tls_options(cert, key)
        )
        port = next(opened.port for opened in listening if opened.transport == "tls")

        static_rsa = tls12_client("AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256")
        assert static_rsa.get_ciphers(), "the client must really offer static-RSA suites"
        with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
            await handshake(port, static_rsa)

        ecdhe = tls12_client("ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256")
        assert await handshake(port, ecdhe) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")

        default = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        default.check_hostname = False
        default.verify_mode = ssl.CERT_NONE
        version, _ = await handshake(port, default)
        assert version == "TLSv1.3"
