"""What the transaction layer tells the layer above it (the dialog and B2BUA code)."""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.sip.message import Request, Response

__all__ = [
    "AckReceived",
    "CancelReceived",
    "Event",
    "Flow",
    "MessageRejected",
    "RequestReceived",
    "ResponseReceived",
    "TransactionTerminated",
    "TransactionTimedOut",
    "Transmission",
]


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from or goes to."""

    transport: str
    """``udp``, ``tcp`` or ``tls``."""
    host: str
    """The peer's IP address."""
    port: int
    """The peer's port."""
    server_name: str | None = None
    """On a TLS flow we open: the name the peer's certificate must carry, the host of the URI
    that was resolved to reach it (RFC 5922), a DNS name or an IP literal. Part of the
    flow's identity, so a connection verified for one name never carries another's requests.
    None on flows peers opened to us and on UDP and TCP."""

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class Transmission:
    """Bytes the transport must send now."""

    data: bytes
    """One whole serialised message (or a CRLF keep-alive answer)."""
    flow: Flow
    """The destination; on TCP/TLS the connection to that peer."""


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission) that the layer above must answer."""

    request: Request
    """The request as parsed."""
    transaction_id: str
    """Pass to ``SipEndpoint.respond``."""
    flow: Flow
    """Where it came from."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a request we sent, or a stray 2xx retransmission (transaction_id None)."""

    response: Response
    """The response as parsed."""
    transaction_id: str | None
    """The client transaction it belongs to; None for a 2xx after the transaction ended."""
    flow: Flow
    """Where it came from."""


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx: it belongs to the dialog, not to a transaction (RFC 3261 §13.3.1.4)."""

    request: Request
    """The ACK."""
    flow: Flow
    """Where it came from."""


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL matched a pending INVITE; it has been answered 200, the INVITE still waits."""

    invite_transaction_id: str
    """The INVITE server transaction to answer with 487."""
    request: Request
    """The CANCEL."""


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B, F or H fired: the peer never answered (or never acknowledged)."""

    transaction_id: str
    """The transaction that gave up."""
    method: str
    """Its request method."""


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """A transaction reached Terminated and holds no timer any more."""

    transaction_id: str
    """The transaction that ended."""


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A message was refused before any transaction: answered statelessly or dropped."""

    reason: str
    """Why."""
    status: int | None
    """The status sent, or None when it was dropped."""
    flow: Flow
    """Where it came from."""


Event = (
    RequestReceived
    | ResponseReceived
    | AckReceived
    | CancelReceived
    | TransactionTimedOut
    | TransactionTerminated
    | MessageRejected
)
