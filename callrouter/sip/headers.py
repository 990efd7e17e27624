"""Header fields: names, compact forms, list splitting and the structured values the core reads.

``Headers`` keeps every field in arrival order with the name as written, so a message re-serialises
with the peer's spelling and compact forms. Lookups are case-insensitive and see through compact
forms. Only headers whose grammar is a comma list (RFC 3261 §7.3.1) are split on commas; the
authentication headers, Date and unknown headers never are.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

from callrouter.sip.errors import ParseError
from callrouter.sip.uri import Uri, format_params, parse_params, parse_uri

__all__ = [
    "KNOWN_KEYS",
    "CSeq",
    "Headers",
    "NameAddress",
    "Via",
    "canonical_name",
    "parse_cseq",
    "parse_name_address",
    "parse_via",
    "split_list",
]

# RFC 3261 §7.3.3 and the extensions that define compact forms (RFC 3265, 3515, 3892, 3841, 4028,
# 4474, 3903).
COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
}

LIST_HEADERS = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "path",
        "service-route",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
        "p-asserted-identity",
        "p-preferred-identity",
        "history-info",
        "diversion",
        "accept-contact",
        "reject-contact",
        "request-disposition",
    }
)

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")

KNOWN_KEYS = {
    spelling: key
    for key in (
        *("via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "route"),
        *("record-route", "content-length", "content-type", "allow", "supported", "require"),
        *("user-agent", "server", "subject", "expires", "session-expires", "min-se", "accept"),
        *("p-asserted-identity", "p-preferred-identity", "privacy", "diversion", "reason"),
        *("warning", "date", "rseq", "rack", "event", "allow-events", "organization"),
    )
    for spelling in (key, key.title(), key.upper())
} | {"CSeq": "cseq", "Call-ID": "call-id", "RSeq": "rseq", "RAck": "rack", "Min-SE": "min-se"}
"""The spellings the core itself looks up and most peers send, with their keys: a dict hit is
cheaper than lowering every name on every lookup (or matching it against the token grammar).
A fixed table, so hostile names cannot grow it."""


def canonical_name(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded."""
    known = KNOWN_KEYS.get(name)
    if known is not None:
        return known
    lower = name.lower()
    return COMPACT_FORMS.get(lower, lower) if len(lower) == 1 else lower


def is_token(text: str) -> bool:
    # The names in the fixed table are tokens: most header lines skip the regular expression.
    return text in KNOWN_KEYS or bool(_TOKEN.match(text))


def split_list(value: str) -> list[str]:
    """Split a header value on the commas that separate elements (not those in quotes or <>)."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    quoted = angled = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            angled = True
        elif char == ">":
            angled = False
        elif char == "," and not angled:
            parts.append(value[start:i].strip())
            start = i + 1
    if quoted:
        raise ParseError(f"unterminated quoted string in {value!r}")
    parts.append(value[start:].strip())
    return [p for p in parts if p]


_Parsed = TypeVar("_Parsed")


class Headers:
    """The header fields of one message, in order, names as written.

    Each field's lookup key (lower case, compact form expanded) is computed once, when the field
    is added: lookups are the parser's hot path. A field that arrived keeps its line as written
    (``raw``), so a message relayed or answered re-sends it byte for byte instead of formatting
    it again; changing a field drops its line. Structured values (``parsed``) are parsed once
    and kept until a field of that name changes, so the parser's checks and every later accessor
    share one parse.
    """

    __slots__ = ("_fields", "_keys", "_parsed", "_raw")

    def __init__(
        self,
        fields: list[tuple[str, str]] | None = None,
        keys: list[str] | None = None,
        raw: list[str | None] | None = None,
    ) -> None:
        """:param keys: the fields' lookup keys when the caller has them already (the parser).
        :param raw: each field's line(s) as received, folding included, without the final line
            end; None for a field that must be formatted from its name and value.
        """
        self._fields: list[tuple[str, str]] = fields if fields is not None else []
        self._keys: list[str] = (
            keys if keys is not None else [canonical_name(name) for name, _ in self._fields]
        )
        self._raw: list[str | None] = raw if raw is not None else [None] * len(self._fields)
        # lookup key -> parser -> its parse of the first value: a change forgets one key.
        self._parsed: dict[str, dict[Callable[[str], object], object]] = {}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name) in self._keys

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable like list

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def copy(self) -> Headers:
        """An independent copy, lines as received and parsed values included."""
        copied = Headers(list(self._fields), list(self._keys), list(self._raw))
        copied._parsed = {key: dict(parses) for key, parses in self._parsed.items()}
        return copied

    def subset(self, keys: Collection[str]) -> Headers:
        """The fields whose lookup keys are in ``keys``, in order, with their lines as received
        and the parsed values of those names (what a response copies from its request)."""
        fields: list[tuple[str, str]] = []
        kept: list[str] = []
        raw: list[str | None] = []
        for key, field_, line in zip(self._keys, self._fields, self._raw, strict=True):
            if key in keys:
                fields.append(field_)
                kept.append(key)
                raw.append(line)
        chosen = Headers(fields, kept, raw)
        chosen._parsed = {key: dict(v) for key, v in self._parsed.items() if key in keys}
        return chosen

    def lines(self) -> Iterator[tuple[str, str, str, str | None]]:
        """(lookup key, name as written, value, line as received or None) of every field."""
        for key, (name, value), line in zip(self._keys, self._fields, self._raw, strict=True):
            yield key, name, value, line

    def parsed(self, name: str, parse: Callable[[str], _Parsed]) -> _Parsed | None:
        """``parse`` of the first value of ``name`` (as ``get`` gives it), or None without one.

        Parsed once until a field of that name changes; a value that fails to parse raises
        every time.
        """
        key = canonical_name(name)
        parses = self._parsed.get(key)
        if parses is None:
            parses = self._parsed[key] = {}
        elif parse in parses:
            return cast(_Parsed, parses[parse])
        value = self.get(name)
        result = None if value is None else parse(value)
        parses[parse] = result
        return result

    def forget_parsed(self) -> None:
        """Let every kept parse go; each is made again if asked for. For a message held long
        after it was last read, whose parses every full garbage collection would walk."""
        self._parsed = {}  # a new empty dict: the collector does not track it

    def count(self, name: str) -> int:
        """How many fields carry this name (list headers count once per field)."""
        return self._keys.count(canonical_name(name))

    def get(self, name: str) -> str | None:
        """The first field's whole value (or first element, for list headers)."""
        key = canonical_name(name)
        try:
            value = self._fields[self._keys.index(key)][1]
        except ValueError:
            return None
        if key in LIST_HEADERS:
            elements = split_list(value)
            return elements[0] if elements else ""
        return value

    def get_all(self, name: str) -> list[str]:
        """Every element across every field of this name, split where the grammar is a list."""
        key = canonical_name(name)
        if key not in self._keys:
            # Most asks are for fields a message lacks (Record-Route, Privacy, Require...): the
            # list's own search says so without a Python loop over every field.
            return []
        values = [self._fields[i][1] for i, k in enumerate(self._keys) if k == key]
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for value in values:
            out.extend(split_list(value))
        return out

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        key = canonical_name(name)
        self._parsed.pop(key, None)
        if first:
            self._fields.insert(0, (name, value))
            self._keys.insert(0, key)
            self._raw.insert(0, None)
        else:
            self._fields.append((name, value))
            self._keys.append(key)
            self._raw.append(None)

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name with one, at the first one's place (or the end)."""
        key = canonical_name(name)
        if key not in self._keys:
            self.add(name, value)
            return
        self._parsed.pop(key, None)
        at = self._keys.index(key)
        kept = [i for i, k in enumerate(self._keys) if k != key or i == at]
        self._fields = [(name, value) if i == at else self._fields[i] for i in kept]
        self._raw = [None if i == at else self._raw[i] for i in kept]
        self._keys = [self._keys[i] for i in kept]

    def replace_value(self, name: str, value: str) -> None:
        """Give the first field of this name a new value, keeping its name as written and its
        place (a To that gains a tag, spelled ``t`` as the peer wrote it)."""
        key = canonical_name(name)
        if key not in self._keys:
            self.add(name, value)
            return
        self._parsed.pop(key, None)
        at = self._keys.index(key)
        self._fields[at] = (self._fields[at][0], value)
        self._raw[at] = None

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._parsed.pop(key, None)
        kept = [i for i, k in enumerate(self._keys) if k != key]
        self._fields = [self._fields[i] for i in kept]
        self._raw = [self._raw[i] for i in kept]
        self._keys = [self._keys[i] for i in kept]

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first element of a list header (the top Via, the first Route)."""
        key = canonical_name(name)
        if key not in self._keys:
            return None
        self._parsed.pop(key, None)
        i = self._keys.index(key)
        written, value = self._fields[i]
        elements = split_list(value)
        if len(elements) > 1:
            self._fields[i] = (written, ", ".join(elements[1:]))
            self._raw[i] = None
        else:
            del self._fields[i]
            del self._keys[i]
            del self._raw[i]
        return elements[0] if elements else None


def _unquote(text: str) -> str:
    r"""The content of a quoted-string: quoted-pair (``\x``) yields x (RFC 3261 §25.1)."""
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class NameAddress:
    """``"Display" <uri>;tag=...`` from To, From, Contact, Route and Record-Route."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    wildcard: bool = False

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddress:
        return NameAddress(self.uri, self.display_name, {**self.params, "tag": tag})

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        name = "" if self.display_name is None else _quote(self.display_name) + " "
        return f"{name}<{self.uri}>{format_params(self.params)}"


WILDCARD = NameAddress(uri=parse_uri("sip:invalid"), wildcard=True)


# Kept like parse_uri's: a call's From and To come back in each of its messages (the ACK, the
# BYE, every response of the other leg).
@functools.lru_cache(maxsize=4096)
def parse_name_address(value: str) -> NameAddress:
    """name-addr or addr-spec, followed by header parameters (RFC 3261 §20.10, §20.20, §20.39).
    The result is shared: never change its ``params`` in place (``with_tag`` makes a new one)."""
    text = value.strip()
    if text == "*":
        return WILDCARD
    display: str | None = None
    if text.startswith('"') and "\\" not in text:
        # No quoted-pair anywhere: the display name ends at the next quote (the common case).
        i = text.find('"', 1)
        if i < 0:
            raise ParseError(f"unterminated display name in {value!r}")
        display = text[1:i]
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise ParseError(f"display name without <URI> in {value!r}")
    elif text.startswith('"'):
        i, escaped = 1, False
        while i < len(text):
            char = text[i]
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                break
            i += 1
        else:
            raise ParseError(f"unterminated display name in {value!r}")
        display = _unquote(text[1:i])
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise ParseError(f"display name without <URI> in {value!r}")
    if "<" in text:
        open_at = text.index("<")
        if display is None:
            words = text[:open_at].split()
            if not all(is_token(word) for word in words):
                raise ParseError(f"display name must be quoted in {value!r}")
            display = " ".join(words) if words else None
        close_at = text.find(">", open_at)
        if close_at < 0:
            raise ParseError(f"unterminated <URI> in {value!r}")
        inner = text[open_at + 1 : close_at]
        if inner != inner.strip():
            raise ParseError(f"whitespace inside <URI> in {value!r}")
        uri = parse_uri(inner)
        rest = text[close_at + 1 :].strip()
    else:
        # addr-spec: the URI cannot carry parameters of its own; what follows ';' is the header's.
        uri_text, _, after = text.partition(";")
        if "," in uri_text or "?" in uri_text:
            raise ParseError(f"addr-spec with reserved characters in {value!r}")
        uri = parse_uri(uri_text.strip())
        rest = ";" + after if _ else ""
    if rest and not rest.startswith(";"):
        raise ParseError(f"unexpected text after URI in {value!r}")
    params = parse_params(rest[1:], "header") if rest else {}
    return NameAddress(uri, display, params)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA = re.compile(
    r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)"
    r"(?:\s*:\s*(\d{1,5}))?\s*(?:;(.*))?$",
    re.IGNORECASE | re.DOTALL,
)


def parse_via(value: str) -> Via:
    match = _VIA.match(value.strip())
    if not match:
        raise ParseError(f"bad Via {value!r}")
    transport, host, port, params = match.groups()
    port_number = int(port) if port else None
    if port_number is not None and not 0 < port_number < 65536:
        raise ParseError(f"bad Via port in {value!r}")
    parsed = parse_params(";".join(p.strip() for p in params.split(";")), "Via") if params else {}
    return Via(transport.upper(), host, port_number, parsed)


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """CSeq = 1*DIGIT LWS Method; the number is 32-bit and below 2**31 (RFC 3261 §8.1.1.5)."""
    number, _, method = value.strip().partition(" ")
    method = method.strip()
    if not number.isdigit() or not is_token(method):
        raise ParseError(f"bad CSeq {value!r}")
    if len(number) > 10 or int(number) >= 2**31:
        raise ParseError(f"CSeq number out of range in {value!r}")
    return CSeq(int(number), method)
