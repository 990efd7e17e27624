"""The checks a UAS makes before acting on a request (RFC 3261 §8.2.1–§8.2.3, §16.3 item 3).

``screen`` returns the response that refuses the request, or None when it may proceed. OPTIONS
is answered here too (§11.2). No response carries a Server header or any version: a banner only
helps scanners.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.sip.errors import ParseError, RemoteError
from callrouter.sip.message import Request, Response
from callrouter.sip.session_timer import MIN_SE, session_expires, supports_timer
from callrouter.sip.uri import SipUri, TelUri

__all__ = ["KNOWN_METHODS", "Capabilities", "answer_options", "screen"]

KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this endpoint does, as advertised in Allow/Accept/Supported."""

    methods: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
    extensions: tuple[str, ...] = ()
    accept: tuple[str, ...] = ("application/sdp",)

    def describe(self, response: Response) -> Response:
        response.headers.add("Allow", ", ".join(self.methods))
        response.headers.add("Accept", ", ".join(self.accept))
        response.headers.add("Supported", ", ".join(self.extensions))
        return response


def screen(request: Request, caps: Capabilities, to_tag: str) -> Response | None:
    """The refusal for a request we must not process, or None.

    Order follows §8.2: method (405/501, then CSeq agreement), URI scheme (416), Max-Forwards
    (483, §16.3), Require (420), body type (415), acceptable answer types (406), then the
    session interval of an INVITE (RFC 4028 §9: 400 unreadable, 422 too small).
    """
    if request.method not in caps.methods:
        # 405 for a method we know and do not offer; 501 for one we have never heard of (§21.5.2).
        status = 405 if request.method in KNOWN_METHODS else 501
        return caps.describe(request.response(status, to_tag=to_tag))
    cseq = request.cseq
    if cseq.method != request.method:
        return request.response(400, "CSeq Method Mismatch", to_tag=to_tag)
    try:
        target = request.target
    except ParseError:
        return request.response(400, "Bad Request-URI", to_tag=to_tag)
    if not isinstance(target, SipUri | TelUri):
        return request.response(416, to_tag=to_tag)
    max_forwards = request.max_forwards
    if max_forwards is not None and max_forwards == 0 and request.method != "OPTIONS":
        return request.response(483, to_tag=to_tag)
    required = {r.lower() for r in request.headers.get_all("require")}
    unsupported = sorted(required - {e.lower() for e in caps.extensions})
    if unsupported and request.method not in ("ACK", "CANCEL"):
        response = request.response(420, to_tag=to_tag)
        response.headers.add("Unsupported", ", ".join(unsupported))
        return response
    if request.body and request.content_type not in caps.accept and request.method != "ACK":
        return caps.describe(request.response(415, to_tag=to_tag))
    accepted = request.headers.get_all("accept")
    if request.method in ("INVITE", "OPTIONS") and accepted and not _accepts_sdp(accepted):
        # We can only ever answer with SDP (RFC 4475 sdp01; §21.4.7).
        return caps.describe(request.response(406, to_tag=to_tag))
    if request.method == "INVITE":
        return _session_interval(request, to_tag)
    return None


def _session_interval(request: Request, to_tag: str) -> Response | None:
    """RFC 4028 §9: an interval below Min-SE is refused with 422 naming ours, but only to a
    caller that supports the extension (it knows to retry); another's too-small interval was
    put there by a proxy and is raised on the way out instead (§8.1)."""
    try:
        asked = session_expires(request)
    except RemoteError as exc:
        return request.response(400, exc.reason, to_tag=to_tag)
    if asked is None or asked.interval >= MIN_SE or not supports_timer(request.headers):
        return None
    response = request.response(422, to_tag=to_tag)
    response.headers.add("Min-SE", str(MIN_SE))
    return response


def _accepts_sdp(accepted: list[str]) -> bool:
    types = {a.split(";", 1)[0].strip().lower() for a in accepted}
    return bool(types & {"application/sdp", "application/*", "*/*"})


def answer_options(request: Request, caps: Capabilities, to_tag: str) -> Response:
    """200 with Allow, Accept and Supported (§11.2); keep-alive pings get the same answer."""
    return caps.describe(request.response(200, to_tag=to_tag))
