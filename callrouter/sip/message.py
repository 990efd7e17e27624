"""SIP requests and responses: parse from bytes, serialise to bytes (RFC 3261 §7, §25).

Rules of this file: the parser reads the start line and the header fields eagerly and checks the
fields every transaction needs (Via, Call-ID, CSeq, From, To; §8.1.1), so a message that leaves
here can be matched to a transaction without further errors. Everything else stays text until
someone asks. A failure is a ``ParseError`` whose status says whether a 400 (or 505) can be sent.
Serialising writes each field that arrived and was not changed as its line(s) as received, and
formats only the fields built or changed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callrouter.sip.errors import MessageTooLarge, ParseError
from callrouter.sip.headers import (
    KNOWN_KEYS,
    CSeq,
    Headers,
    NameAddress,
    Via,
    canonical_name,
    is_token,
    parse_cseq,
    parse_name_address,
    parse_via,
)
from callrouter.sip.uri import SipUri, Uri, parse_uri

__all__ = [
    "REASONS",
    "VERSION",
    "Limits",
    "Message",
    "Request",
    "Response",
    "parse_message",
]

VERSION = "SIP/2.0"

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What the parser accepts at most; beyond it the message is refused, not half-read."""

    max_message_bytes: int = 65_535
    max_headers: int = 256


DEFAULT_LIMITS = Limits()


class _Base:
    """What requests and responses share: the header fields every transaction reads."""

    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def top_via(self) -> Via:
        via = self.headers.parsed("via", parse_via)
        if via is None:
            raise ParseError("no Via header", status=None)
        return via

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("via")]

    @property
    def call_id(self) -> str:
        value = self.headers.parsed("call-id", str.strip)
        if not value:
            raise ParseError("no Call-ID header")
        return value

    @property
    def cseq(self) -> CSeq:
        cseq = self.headers.parsed("cseq", parse_cseq)
        if cseq is None:
            raise ParseError("no CSeq header")
        return cseq

    @property
    def from_(self) -> NameAddress:
        address = self.headers.parsed("from", parse_name_address)
        if address is None:
            raise ParseError("no From header")
        return address

    @property
    def to(self) -> NameAddress:
        address = self.headers.parsed("to", parse_name_address)
        if address is None:
            raise ParseError("no To header")
        return address

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def _head_lines(self, start: str) -> str:
        """The start line and the header fields, CRLF between them: a field that arrived and
        was not changed is its line as received (spacing, compact name, folding and all)."""
        lines = [start]
        length: str | None = None
        for key, name, value, raw in self.headers.lines():
            if key != "content-length":
                lines.append(f"{name}: {value}" if raw is None else raw)
            elif length is None:
                # Content-Length always says what this message carries (the body may have been
                # cut at it, or replaced): the line as received only while it still does.
                length = str(len(self.body))
                lines.append(raw if raw is not None and value == length else f"{name}: {length}")
        if length is None:
            lines.append(f"Content-Length: {len(self.body)}")
        return "\r\n".join(lines)


@dataclass(slots=True)
class Request(_Base):
    """A SIP request. ``uri`` is the Request-URI as text; ``target`` parses it."""

    method: str = "OPTIONS"
    uri: str = "sip:invalid"
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    _target: tuple[str, Uri] | None = field(default=None, init=False, repr=False, compare=False)
    """The parse of ``uri`` (the parser makes it), kept while ``uri`` stays that text."""

    @property
    def target(self) -> Uri:
        memo = self._target
        if memo is None or memo[0] != self.uri:
            memo = self._target = (self.uri, parse_uri(self.uri))
        return memo[1]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("max-forwards")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit() or int(value) > 255:
            raise ParseError(f"bad Max-Forwards {value!r}")
        return int(value)

    def to_bytes(self) -> bytes:
        head = self._head_lines(f"{self.method} {self.uri} {VERSION}")
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + self.body

    def response(
        self, status: int, reason: str | None = None, *, to_tag: str | None = None
    ) -> Response:
        """The response skeleton of §8.2.6.2: Via, From, To (+tag), Call-ID, CSeq copied, each
        as received (line and parse) unless the To gains our tag."""
        headers = self.headers.subset(_ECHOED)
        if to_tag is not None:
            value = headers.get("to")
            if value is not None and ";tag=" not in value.replace(" ", "").lower():
                headers.replace_value("to", f"{value};tag={to_tag}")
        return Response(status, reason or REASONS.get(status, ""), headers, b"")


@dataclass(slots=True)
class Response(_Base):
    """A SIP response."""

    status: int = 200
    reason: str = "OK"
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def to_bytes(self) -> bytes:
        head = self._head_lines(f"{VERSION} {self.status} {self.reason}")
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + self.body


Message = Request | Response

_ECHOED = frozenset({"via", "from", "to", "call-id", "cseq"})


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    return data.rstrip(b"\r\n"), b""


def _header_lines(
    head: str, limits: Limits
) -> tuple[str, list[tuple[str, str]], list[str], list[str | None]]:
    """The start line, then each field's (name, value), lookup key and line(s) as received."""
    # §7.5 allows bare LF line ends from lenient peers: read those lines, but keep no line as
    # received then (a relayed field must not carry LF-only ends into a CRLF message).
    exact = head.count("\n") == head.count("\r\n")
    lines = head.split("\r\n") if exact else head.replace("\r\n", "\n").split("\n")
    first = 0
    while first < len(lines) and not lines[first]:
        first += 1  # §7.5: CRLFs before the start line are ignored
    if first == len(lines):
        raise ParseError("empty message", status=None)
    fields: list[tuple[str, str]] = []
    keys: list[str] = []
    raw: list[str | None] = []
    most = limits.max_headers
    # §21.5.14's 513 to a request (its fields are answered from by ``rejection_for``); a
    # response has nobody to answer.
    too_many = None if lines[first].startswith("SIP/") else 513
    for line in lines[first + 1 :]:
        if line[:1] in (" ", "\t"):
            if not fields:
                raise ParseError("continuation line before any header", status=None)
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}" if value else line.strip())
            if exact:
                raw[-1] = f"{raw[-1]}\r\n{line}"
            continue
        name, colon, value = line.partition(":")
        # The spellings of the fixed table are tokens: most lines skip the token grammar.
        key = KNOWN_KEYS.get(name)
        if key is None:
            name = name.rstrip(" \t")
            if not colon or not is_token(name):
                raise ParseError(f"malformed header line {line[:60]!r}")
            key = canonical_name(name)
        elif not colon:
            raise ParseError(f"malformed header line {line[:60]!r}")
        fields.append((name, value.strip(" \t")))
        keys.append(key)
        raw.append(line if exact else None)
        if len(fields) > most:
            raise ParseError("too many header fields", status=too_many)
    return lines[first], fields, keys, raw


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS, *, stream: bool = False) -> Message:
    """Parse one whole message.

    :param stream: the bytes came framed from TCP/TLS, so a missing Content-Length means no body;
        over UDP the body is the rest of the datagram and bytes past Content-Length are dropped
        (RFC 3261 §18.3).
    """
    if len(data) > limits.max_message_bytes:
        raise MessageTooLarge(data)
    head_bytes, rest = _split_head(data)
    head = head_bytes.decode("utf-8", "surrogateescape")
    start, fields, keys, raw = _header_lines(head, limits)
    headers = Headers(fields, keys, raw)
    message: Message
    if start.startswith("SIP/"):
        message = _parse_status_line(start, headers)
    else:
        message = _parse_request_line(start, headers)
    message.body = _body(headers, rest, stream, isinstance(message, Request))
    _check_required(message)
    return message


def _parse_status_line(start: str, headers: Headers) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != VERSION:
        raise ParseError(f"unsupported version {version!r}", status=None)
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise ParseError(f"bad status code {code!r}", status=None)
    return Response(int(code), reason, headers)


def _parse_request_line(start: str, headers: Headers) -> Request:
    parts = start.split(" ")
    # A request can only be answered when its Via can be read; judge that before anything else.
    respondable = 400 if _via_readable(headers) else None
    if len(parts) != 3:
        raise ParseError(f"malformed request line {start[:80]!r}", status=respondable)
    method, uri, version = parts
    if not is_token(method):
        raise ParseError(f"bad method {method!r}", status=respondable)
    if not version.upper().startswith("SIP/"):
        raise ParseError(f"malformed request line {start[:80]!r}", status=respondable)
    if version.upper() != VERSION:
        raise ParseError(f"unsupported version {version!r}", status=505 if respondable else None)
    try:
        target = parse_uri(uri)
    except ParseError as exc:
        raise ParseError(f"bad Request-URI: {exc.reason}", status=respondable) from None
    if isinstance(target, SipUri) and target.headers is not None:
        # RFC 3261 §19.1.1 table 1: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise ParseError("headers in the Request-URI", status=respondable)
    request = Request(method, uri, headers)
    request._target = (uri, target)
    return request


def _via_readable(headers: Headers) -> bool:
    """Whether a response can be formed: a Via is there (even a bad one: the answer then goes
    back to the source address)."""
    return headers.get("via") is not None


_SINGLETONS = ("to", "from", "call-id", "cseq", "max-forwards", "content-type")


def _body(headers: Headers, rest: bytes, stream: bool, is_request: bool) -> bytes:
    status = 400 if is_request else None
    lengths = headers.get_all("content-length")
    if not lengths:
        return b"" if stream else rest
    if len({v.strip() for v in lengths}) > 1:
        raise ParseError("conflicting Content-Length headers", status=status)
    text = lengths[0].strip()
    if not text.isdigit():
        raise ParseError(f"bad Content-Length {text!r}", status=status)
    length = int(text)
    if length > len(rest):
        raise ParseError("Content-Length larger than the body", status=status)
    return rest[:length]


def _check_required(message: Message) -> None:
    """§8.1.1: To, From, CSeq, Call-ID and Via are mandatory; responses are dropped when broken."""
    respondable = isinstance(message, Request) and _via_readable(message.headers)
    try:
        _ = (message.top_via, message.call_id, message.from_, message.to, message.cseq)
        if isinstance(message, Request):
            _ = message.max_forwards
            # The first Contact's parse is kept: the dialog's remote target reads it again.
            message.headers.parsed("contact", parse_name_address)
            for contact in message.headers.get_all("contact")[1:]:
                parse_name_address(contact)
            for name in _SINGLETONS:
                if message.headers.count(name) > 1:
                    raise ParseError(f"more than one {name} value")
    except ParseError as exc:
        raise ParseError(exc.reason, status=400 if respondable else None) from None
