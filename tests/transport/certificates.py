"""Certificates made for a test, into its temporary directory: a private CA and what it signs,
or a self-signed one."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _names(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write(directory: Path, stem: str, certificate: x509.Certificate, key: PrivateKey) -> Path:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path


def _builder(subject: str, issuer: x509.Name, key: PrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def self_signed(
    directory: Path, *, rsa_key: bool = False, names: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[Path, Path]:
    """A certificate for ``names`` signed by its own key, and that key: ECDSA, or RSA (which
    static-RSA suites need). Paths ``sip.crt`` and ``sip.key``."""
    key: PrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        _builder(names[0], name, key)
        .add_extension(_names(list(names)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, "sip", certificate, key), directory / "sip.key"


@dataclass
class Authority:
    """A private CA whose certificate is ``certificate`` (a PEM file in ``directory``)."""

    directory: Path
    name: str = "Test SIP CA"

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        ca = (
            _builder(self.name, self.subject, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.certificate = _write(self.directory, "ca", ca, self.key)

    def issue(self, stem: str, *names: str) -> tuple[Path, Path]:
        """A server certificate for ``names`` (DNS names or IP addresses) and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            _builder(names[0], self.subject, key)
            .add_extension(_names(list(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return _write(self.directory, stem, certificate, key), self.directory / f"{stem}.key"
