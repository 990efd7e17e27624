"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed and written back.

Parameters keep their order and spelling; a parameter without a value maps to None. The user part
stays escaped as received: equality and routing decisions compare the unescaped form.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from callrouter.sip.errors import ParseError

__all__ = ["OtherUri", "SipUri", "TelUri", "Uri", "format_params", "parse_params", "parse_uri"]

# hostname / IPv4address / "[" IPv6address "]"; checked loosely on purpose: carriers send
# underscores in hostnames, and a stricter check would refuse calls nobody else refuses.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_USER_CHARS = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")
_PARAM_CHARS = re.compile(r"^[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]*$")
_WHITESPACE = re.compile(r"[ \t\r\n]")


def parse_params(text: str, what: str) -> dict[str, str | None]:
    """``;name=value;flag`` (the leading ';' already removed) into an ordered dict."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not name or not _PARAM_CHARS.match(name):
            raise ParseError(f"bad {what} parameter {item!r}")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True, slots=True)
class SipUri:
    """``sip:user:password@host:port;params?headers``."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    scheme: str = "sip"

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    def with_params(self, **changes: str | None) -> SipUri:
        return replace(self, params={**self.params, **changes})

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class TelUri:
    """``tel:+1-201-555-0123;phone-context=...`` (RFC 3966)."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def digits(self) -> str:
        """The number without visual separators, keeping a leading '+'."""
        return "".join(c for c in self.number if c.isdigit() or c in "+*#")

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class OtherUri:
    """Any other absolute URI (http:, mailto:, urn:...): kept verbatim, never routed."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | OtherUri


# The same URIs come back in every message of a call and in every call of a carrier (the
# Request-URI of a tracking number, the gateway's Contact, our own URIs in the destination's
# responses): a parse is a pure function of the text and gives a frozen value, so it is kept.
# Bounded, so hostile traffic can only evict; a text that fails raises every time (nothing kept).
@functools.lru_cache(maxsize=4096)
def parse_uri(text: str) -> Uri:
    """Parse an absolute URI; ParseError says what is wrong with it. The result is shared:
    never change its ``params`` in place (``with_params`` makes a new URI)."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise ParseError(f"not an absolute URI: {text!r}")
    if _WHITESPACE.search(text):
        raise ParseError(f"whitespace inside URI {text!r}")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip(lower, rest, text)
    if lower == "tel":
        number, _, params = rest.partition(";")
        if not number or not all(c.isdigit() or c in "+-.()*#ABCDEFabcdefpwPW" for c in number):
            raise ParseError(f"bad telephone number in {text!r}")
        return TelUri(number, parse_params(params, "tel URI"))
    return OtherUri(lower, rest)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    # The first '@' ends the userinfo: '@' may appear neither in the user part (where '?' and
    # ';' may, RFC 3261 §25.1 user-unreserved) nor unescaped in the headers part.
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user or not _USER_CHARS.match(user):
            raise ParseError(f"bad user part in {text!r}")
    rest, question, headers = rest.partition("?")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = rest[: end + 1], rest[end + 1 :]
        hostport_tail, semi, params = rest.partition(";")
    else:
        hostport, semi, params = rest.partition(";")
        host, _, hostport_tail = hostport.partition(":")
        hostport_tail = ":" + hostport_tail if _ else ""
    port: int | None = None
    if hostport_tail:
        digits = hostport_tail[1:] if hostport_tail.startswith(":") else ""
        if not digits.isdigit() or not 0 < int(digits) < 65536:
            raise ParseError(f"bad port in {text!r}")
        port = int(digits)
    if not _HOST.match(host):
        raise ParseError(f"bad host in {text!r}")
    return SipUri(
        host=host,
        user=user,
        password=password,
        port=port,
        params=parse_params(params, "URI") if semi else {},
        headers=headers if question else None,
        scheme=scheme,
    )
