"""SIP over TLS: a real TLS listener with a certificate from files, a real TLS client."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from contextlib import AsyncExitStack
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
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
