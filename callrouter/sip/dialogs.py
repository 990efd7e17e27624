"""Dialogs (RFC 3261 §12) and the UAS's 2xx retransmission until the ACK (§13.3.1.4).

A ``Dialog`` is data: the identifiers, the route set, the remote target and both CSeq counters,
with the rules for building in-dialog requests and checking received ones. ``AnswerRepeater``
is the one timer a UAS owns at the dialog level: a 2xx to an INVITE is retransmitted by the UAS
core, not by the transaction, because the transaction ends (Accepted) while the 2xx may be lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.sip.errors import LocalError, RemoteError
from callrouter.sip.headers import Headers, NameAddress, parse_name_address
from callrouter.sip.message import Request, Response
from callrouter.sip.transactions import Timers
from callrouter.sip.uri import SipUri

__all__ = ["AnswerRepeater", "Dialog", "DialogId"]

DialogId = tuple[str, str, str]
"""(Call-ID, local tag, remote tag)."""


def _target(headers: Headers) -> str:
    # The parser checked (and kept) the first Contact's parse: reading it again costs nothing.
    contact = headers.parsed("contact", parse_name_address)
    if contact is None:
        raise RemoteError("dialog-creating message without Contact", status=400)
    return str(contact.uri)


def _without_tag(address: NameAddress) -> str:
    params = {k: v for k, v in address.params.items() if k != "tag"}
    return str(NameAddress(address.uri, address.display_name, params))


@dataclass(eq=False)
class Dialog:
    """One dialog as seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """Our address-of-record header value (From when we are the UAC), without tag."""
    remote_uri: str
    remote_target: str
    """Where in-dialog requests go: the peer's Contact URI."""
    route_set: tuple[str, ...]
    """Record-Route values in the order requests take them (§12.1): a tuple of text, which the
    garbage collector stops tracking, as a dialog may be held for hours."""
    local_contact: str
    """Our Contact URI, for requests and target refreshes."""
    local_seq: int
    remote_seq: int | None = None
    confirmed: bool = False

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, request: Request, to_tag: str, local_contact: str) -> Dialog:
        """§12.1.1: the dialog an INVITE creates at the UAS once we answer with ``to_tag``."""
        from_ = request.from_
        if from_.tag is None:
            raise RemoteError("INVITE without From tag", status=400)
        return cls(
            call_id=request.call_id,
            local_tag=to_tag,
            remote_tag=from_.tag,
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(from_),
            remote_target=_target(request.headers),
            route_set=tuple(request.headers.get_all("record-route")),
            local_contact=local_contact,
            local_seq=0,
            remote_seq=request.cseq.number,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """§12.1.2: the dialog a 2xx (or 1xx with To tag) to our INVITE creates."""
        to_tag = response.to.tag
        from_tag = request.from_.tag
        if to_tag is None or from_tag is None:
            raise RemoteError("dialog-creating response without To tag", status=None)
        return cls(
            call_id=request.call_id,
            local_tag=from_tag,
            remote_tag=to_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=_target(response.headers),
            route_set=tuple(reversed(response.headers.get_all("record-route"))),
            local_contact=local_contact,
            local_seq=request.cseq.number,
        )

    def answer(self, request: Request, status: int, body: bytes = b"") -> Response:
        """A response in this dialog: our tag, Record-Route echoed (§12.1.1), our Contact."""
        response = request.response(status, to_tag=self.local_tag)
        for route in request.headers.get_all("record-route"):
            response.headers.add("Record-Route", route)
        if 200 <= status < 300 or (status > 100 and request.method == "INVITE"):
            response.headers.add("Contact", f"<{self.local_contact}>")
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        return response

    def request(self, method: str, body: bytes = b"", *, cseq: int | None = None) -> Request:
        """A new in-dialog request (§12.2.1.1); ``cseq`` only for the ACK of a 2xx, which
        reuses the INVITE's number."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        elif method != "ACK":
            raise LocalError("only an ACK reuses a CSeq number")
        uri = self.remote_target
        routes = list(self.route_set)
        if routes:
            first = parse_name_address(routes[0]).uri
            if isinstance(first, SipUri) and "lr" not in first.params:
                # Strict routing (RFC 2543): the first route becomes the Request-URI.
                uri = str(first)
                routes = [*routes[1:], f"<{self.remote_target}>"]
        headers = Headers()
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        headers.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            headers.add("Contact", f"<{self.local_contact}>")
        if body:
            headers.add("Content-Type", "application/sdp")
        return Request(method, uri, headers, body)

    def check(self, request: Request) -> Response | None:
        """§12.2.2: a request in this dialog; the refusal, or None after taking its CSeq.

        A CSeq lower than the last one seen is out of order (500); ACK and CANCEL reuse the
        INVITE's number and are not counted.
        """
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return None
        if self.remote_seq is not None and number <= self.remote_seq:
            return request.response(500, "Out Of Order CSeq", to_tag=self.local_tag)
        self.remote_seq = number
        if request.method == "INVITE" and request.headers.get("contact"):
            self.remote_target = _target(request.headers)  # target refresh (§12.2.2)
        return None

    def matches(self, message: Request | Response) -> bool:
        if message.call_id != self.call_id:
            return False
        if isinstance(message, Request):
            return message.to.tag == self.local_tag and message.from_.tag == self.remote_tag
        return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag


@dataclass(eq=False)
class AnswerRepeater:
    """Retransmits a 2xx to an INVITE until its ACK (§13.3.1.4): T1, doubling up to T2, and
    gives up at 64*T1, when the UAS must end the dialog with BYE."""

    response: Response
    timers: Timers
    started: float
    _interval: float = 0.0
    _next: float | None = None
    acked: bool = False
    gave_up: bool = False

    def __post_init__(self) -> None:
        self._interval = self.timers.t1
        self._next = self.started + self._interval

    @property
    def deadline(self) -> float | None:
        return None if self.acked or self.gave_up else self._next

    def handle_timer(self, now: float) -> list[Response]:
        """The retransmissions due at ``now`` (at most one per call)."""
        if self._next is None or self.acked or self.gave_up or now < self._next:
            return []
        if now >= self.started + 64 * self.timers.t1:
            self.gave_up = True
            return []
        self._interval = min(2 * self._interval, self.timers.t2)
        self._next = now + self._interval
        return [self.response]

    def ack(self) -> None:
        self.acked = True
