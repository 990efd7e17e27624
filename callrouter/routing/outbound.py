"""What leaves on a leg: the outbound INVITE, the ACK of a 2xx, caller-ID presentation and where
in-dialog requests go. Pure functions of their arguments (no I/O, no clock).

Rules of this file (topology hiding):
- Nothing of one leg's Via, Contact, Record-Route or Call-ID reaches the other leg: a request for
  the destination is built afresh (new Call-ID, From tag, CSeq) with our own Contact.
- Of the caller's From, only the user part and display name cross over, never the carrier's host.
- The body (SDP) passes across as given: the media anchor rewrites it before it gets here.
"""

from __future__ import annotations

import secrets

from callrouter.routing.session_timers import carry_request
from callrouter.routing.trunks import Trunk
from callrouter.sip.dialogs import Dialog
from callrouter.sip.errors import SipError
from callrouter.sip.events import Flow
from callrouter.sip.headers import Headers
from callrouter.sip.message import Request, Response
from callrouter.sip.uri import SipUri, parse_uri

__all__ = [
    "ANONYMOUS",
    "METHODS",
    "RELAYED",
    "ack_request",
    "allow_towards",
    "contact_uri",
    "destination_uri",
    "dialog_flow",
    "dialog_response",
    "outbound_invite",
    "presented_caller",
    "withheld",
]

ANONYMOUS = '"Anonymous" <sip:anonymous@anonymous.invalid>'
"""The From of a withheld caller (RFC 3323 §4.1.1.3)."""


METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
"""The methods we answer ourselves on every leg."""

RELAYED = ("UPDATE", "INFO")
"""The in-dialog methods we pass to the other leg (RFC 3311, RFC 6086)."""


def allow_towards(other: Headers) -> str:
    """Our Allow on one leg (RFC 3261 §20.5): our own methods, and those we relay that the other
    leg's peer said it allows. A peer told we take UPDATE may refresh its session with one
    (RFC 4028 §7.4); relayed to a peer that takes none, that refresh would fail and the call
    would expire. A peer that sends no Allow is offered only what every UA takes."""
    allowed = {m.strip().upper() for m in other.get_all("allow")}
    return ", ".join([*METHODS, *(m for m in RELAYED if m in allowed)])


def contact_uri(flow: Flow, sent_by: str) -> str:
    """Our Contact towards a peer at ``flow``, advertising ``sent_by`` (host:port)."""
    suffix = "" if flow.transport == "udp" else f";transport={flow.transport}"
    return f"sip:callrouter@{sent_by}{suffix}"


def withheld(inbound: Request, trunk: Trunk | None) -> bool:
    """The caller asked for privacy (RFC 3323) or the trunk withholds every caller ID."""
    asked = "id" in {p.strip().lower() for p in inbound.headers.get_all("privacy")}
    return asked or (trunk is not None and trunk.caller_id == "withhold")


def presented_caller(
    inbound: Request, presented_number: str | None, trunk: Trunk | None, host: str
) -> str:
    """The From (without tag) the destination sees: the caller's number, the trunk's, or nobody's.

    :param presented_number: the caller's number as normalised at the door (None: use the user
        part of the caller's From).
    :param host: our host towards the destination.
    """
    if withheld(inbound, trunk):
        return ANONYMOUS
    if trunk is not None and trunk.caller_id == "rewrite" and trunk.caller_id_number:
        return f"<sip:{trunk.caller_id_number}@{host}>"
    caller = inbound.from_
    display = f'"{caller.display_name}" ' if caller.display_name else ""
    user = presented_number or getattr(caller.uri, "user", None) or "anonymous"
    return f"{display}<sip:{user}@{host}>"


def destination_uri(destination: str, outbound: Trunk | None) -> tuple[SipUri | None, Trunk | None]:
    """Where a dialplan destination is sent: E.164 numbers through the ``outbound`` trunk's
    gateway, SIP URIs as they are. (None, ...) when it cannot be reached."""
    if destination.startswith("+"):
        if outbound is None or outbound.uri is None:
            return None, None
        try:
            gateway = parse_uri(outbound.uri)
        except SipError:
            return None, outbound
        if not isinstance(gateway, SipUri):
            return None, outbound
        uri = SipUri(gateway.host, destination, None, gateway.port, dict(gateway.params))
        return uri, outbound
    try:
        parsed = parse_uri(destination)
    except SipError:
        return None, None
    return (parsed if isinstance(parsed, SipUri) else None), None


def outbound_invite(
    inbound: Request,
    uri: SipUri,
    *,
    host: str,
    contact: str,
    presented_number: str | None,
    trunk: Trunk | None,
    body: bytes,
    session_expires: int = 0,
    min_se: int | None = None,
) -> Request:
    """The INVITE of a new outbound leg for the caller's ``inbound`` INVITE.

    :param host: our host towards the destination (From and Call-ID).
    :param contact: our Contact URI towards the destination.
    :param body: the offer the destination gets (the caller's, or anchored on the media worker).
    :param session_expires: the session interval asked for when the caller asks for none
        (routing/session_timers.py; 0: none).
    :param min_se: the Min-SE of the destination's 422 this INVITE retries after.
    """
    headers = Headers()
    forwards = inbound.max_forwards
    headers.add("Max-Forwards", str(max(1, (forwards if forwards is not None else 70) - 1)))
    caller = presented_caller(inbound, presented_number, trunk, host)
    headers.add("From", f"{caller};tag={secrets.token_hex(6)}")
    headers.add("To", f"<{uri}>")
    headers.add("Call-ID", f"{secrets.token_hex(16)}@{host}")
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", f"<{contact}>")
    headers.add("Allow", allow_towards(inbound.headers))
    carry_request(inbound, headers, ask=session_expires, floor=min_se)
    if withheld(inbound, trunk):
        headers.add("Privacy", "id")
    if body:
        headers.add("Content-Type", inbound.headers.get("content-type") or "application/sdp")
    return Request("INVITE", str(uri), headers, body)


def ack_request(dialog: Dialog, cseq: int, flow: Flow, sent_by: str) -> Request:
    """The ACK for a 2xx: a transaction of its own (§13.2.2.4), so a fresh Via branch."""
    ack = dialog.request("ACK", cseq=cseq)
    branch = f"z9hG4bK{secrets.token_hex(8)}"
    ack.headers.add(
        "Via", f"SIP/2.0/{flow.transport.upper()} {sent_by};branch={branch}", first=True
    )
    return ack


def dialog_flow(dialog: Dialog, fallback: Flow, *, behind_nat: bool = False) -> Flow:
    """Where in-dialog requests go: the first Route, else the remote target, when it names an IP
    address; else ``fallback`` (where the dialog's first request went or came from).

    :param behind_nat: the peer is a caller on a ``nat`` trunk: it is reached where its requests
        come from, since its Contact names an address behind its NAT.

    Over TLS the flow keeps ``fallback``'s server name: the peer gave that address in a response
    on a connection verified for the name, so whoever answers there must prove the same name
    (a PBX's Contact names its IP address, its certificate its domain). A caller's connection
    to us carries no name; its address is then checked as an IP literal (RFC 5922).
    """
    if behind_nat:
        return fallback
    target = (
        dialog.route_set[0].strip("<>").split(";")[0] if dialog.route_set else dialog.remote_target
    )
    try:
        uri = parse_uri(target)
    except SipError:
        return fallback
    if isinstance(uri, SipUri) and uri.host[:1].isdigit():
        transport = uri.transport or fallback.transport
        if transport != "tls":
            return Flow(transport, uri.host, uri.port or 5060)
        return Flow(transport, uri.host, uri.port or 5061, fallback.server_name)
    return fallback


def dialog_response(request: Request, status: int, to_tag: str) -> Response:
    """A response that creates the caller's dialog (18x, 2xx): Record-Route copied (RFC 3261
    §12.1.1), so that a record-routing proxy in front (a carrier's SBC, Kamailio's dispatcher)
    stays on the path of the caller's ACK, BYE and re-INVITE. The caller's own leg only: the
    other leg never sees these (topology hiding)."""
    response = request.response(status, to_tag=to_tag)
    for route in request.headers.get_all("record-route"):
        response.headers.add("Record-Route", route)
    return response
