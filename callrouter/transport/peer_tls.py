"""Verifying the TLS peers we connect to: the chain against a trust root, the name against the
host we meant to reach.

RFC 5922: the name a SIP server's certificate must carry is the host of the URI that was
resolved (the SIP domain of the Request-URI or of the route), never the address DNS gave for
it, since NAPTR, SRV and A answers are not authenticated; an IP literal is checked against the
certificate's iPAddress entries. Twisted's ``optionsForClientTLS`` does both checks
(OpenSSL for the chain, service_identity for the name) and aborts the handshake before any SIP
byte leaves; this module picks its options per name and says why a peer was refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure

__all__ = ["PeerTls", "Refusal", "trust_root"]

OPTIONS_KEPT = 256
"""Names whose client options (an OpenSSL context each, the trust store loaded into it) are
kept for reuse; the oldest is dropped past this, so no destination list grows memory without
bound."""


def trust_root(ca_file: Path | None) -> Any:
    """The trust root for outbound TLS (an ``IOpenSSLTrustRoot``): the certificates of the PEM
    bundle ``ca_file`` and no others, else the system's store. A self-signed certificate in the
    bundle is trusted as itself: that is how one private PBX is pinned.

    :raises OSError: when the file cannot be read.
    :raises ValueError: when it holds no PEM certificate.
    """
    if ca_file is None:
        return platformTrust()  # type: ignore[no-untyped-call]
    # Twisted reads one PEM certificate at a time; cryptography splits the bundle.
    bundle = x509.load_pem_x509_certificates(ca_file.read_bytes())
    return trustRootFromCertificates(  # type: ignore[no-untyped-call]
        [Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in bundle]
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a TLS peer was refused."""

    kind: str
    """``name`` (the certificate does not name the host), ``chain`` (it does not lead to a
    trusted root: unknown issuer, self-signed, expired) or ``handshake`` (anything else: the
    peer closed, no common protocol or cipher, the handshake timed out)."""
    detail: str
    """A sentence for the log and for the 503 the waiting requests get."""


@dataclass(eq=False)
class PeerTls:
    """Client TLS options per expected name, over one trust root; counts refusals by kind."""

    trust: Any = field(default_factory=platformTrust)
    """An ``IOpenSSLTrustRoot`` (zope interfaces do not type-check)."""
    refused: Counter[str] = field(default_factory=Counter)
    """Peers refused, by ``Refusal.kind``."""
    _options: dict[str, Any] = field(default_factory=dict)

    def options_for(self, name: str) -> Any:
        """The ``IOpenSSLClientConnectionCreator`` that verifies a peer as ``name``."""
        options = self._options.get(name)
        if options is None:
            if len(self._options) >= OPTIONS_KEPT:
                del self._options[next(iter(self._options))]
            options = self._options[name] = optionsForClientTLS(name, trustRoot=self.trust)
        return options

    def refusal(self, name: str, reason: Failure | None) -> Refusal:
        """Why the handshake with a peer expected to be ``name`` ended, counted once."""
        error = reason.value if reason is not None else None
        if isinstance(error, VerificationError):
            found = Refusal("name", f"its certificate does not name {name}")
        elif isinstance(error, SSL.Error) and "certificate verify failed" in str(error):
            found = Refusal(
                "chain",
                "its certificate does not lead to a trusted root "
                "(unknown issuer, self-signed or expired)",
            )
        else:
            why = reason.getErrorMessage() if reason is not None else "connection closed"
            found = Refusal("handshake", f"the TLS handshake failed: {why}")
        self.refused[found.kind] += 1
        return found
