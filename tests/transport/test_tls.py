"""SIP over TLS: a real TLS listener with a certificate from files, a real TLS client."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet.ssl import CertificateOptions

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Event, Flow, ResponseReceived
from callrouter.transport.listeners import open_listeners, tls_options
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.service import SipService
from callrouter.transport.stream import StreamTransport
from tests.sip.messages import options
from tests.transport.responder import Responder


def self_signed(directory: Path, *, rsa_key: bool = False) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key: ECDSA, or RSA (which static-RSA suites need)."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sip.crt", directory / "sip.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_options_over_tls_is_answered(tmp_path: Path) -> None:
    reactor = asyncio_reactor(asyncio.get_running_loop())
    cert, key = self_signed(tmp_path)
    async with AsyncExitStack() as stack:
        uas = Responder(reactor)
        stack.callback(uas.service.close)
        listening = await open_listeners(
            reactor, uas.service, "127.0.0.1", 0, stack, tls_port=0, tls=tls_options(cert, key)
        )
        tls_port = next(opened.port for opened in listening if opened.transport == "tls")

        answered: asyncio.Queue[Event] = asyncio.Queue()
        client = SipService(SipEndpoint({"tls": "127.0.0.1:5061"}), reactor, answered.put_nowait)
        secure = StreamTransport("tls", client, reactor, tls_client=CertificateOptions())
        client.senders["tls"] = secure
        stack.callback(secure.close_all)
        stack.callback(client.close)

        request = options()
        request.headers.pop_first("via")
        client.send_request(request, Flow("tls", "127.0.0.1", tls_port))
        event = await asyncio.wait_for(answered.get(), 30)
        assert isinstance(event, ResponseReceived) and event.response.status == 200
        assert uas.seen == ["OPTIONS"]


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
