"""The checks a UAS makes before acting on a request (RFC 3261 §8.2.1–§8.2.3, §16.3 item 3).

``screen`` returns the response that refuses the request, or None when it may proceed. OPTIONS
is answered here too (§11.2). No response carries a Server header or any version: a banner only
helps scanners.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.sip.errors import ParseError
from callrouter.sip.message import Request, Response
from callrouter.sip.uri import SipUri, TelUri

__all__ = ["Capabilities", "answer_options", "screen"]


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

    Order follows §8.2: method (405), URI scheme (416), Max-Forwards (483, §16.3), Require
    (420), body type (415).
    """
    if request.method not in caps.methods:
        return caps.describe(request.response(405, to_tag=to_tag))
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
    return None


def answer_options(request: Request, caps: Capabilities, to_tag: str) -> Response:
    """200 with Allow, Accept and Supported (§11.2); keep-alive pings get the same answer."""
    return caps.describe(request.response(200, to_tag=to_tag))
