"""SDP (RFC 4566, offer/answer per RFC 3264): the subset carriers send, edited without loss.

A description is its lines in order; the session part and each media section keep every line,
known or not, so ``str(parse(text)) == text`` for well-formed input (line endings normalised to
CRLF). The B2BUA only rewrites connection addresses and media ports to anchor RTP on the relay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callrouter.sip.errors import ParseError

__all__ = ["MediaSection", "SessionDescription", "parse_sdp"]


@dataclass(slots=True)
class MediaSection:
    """One ``m=`` line and the lines under it."""

    media: str
    port: int
    protocol: str
    formats: list[str]
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def connection_address(self) -> str | None:
        return _connection(self.lines)

    @property
    def attributes(self) -> list[str]:
        return [v for k, v in self.lines if k == "a"]

    def attribute(self, name: str) -> str | None:
        """The value of ``a=name:value`` (``""`` for a flag ``a=name``), or None."""
        for value in self.attributes:
            key, colon, rest = value.partition(":")
            if key == name:
                return rest if colon else ""
        return None

    @property
    def rtpmap(self) -> dict[str, str]:
        """Payload type to ``encoding/clock[/channels]``; static types fall back to RFC 3551."""
        mapping = {pt: _STATIC.get(pt, "") for pt in self.formats}
        for value in self.attributes:
            if value.startswith("rtpmap:"):
                pt, _, encoding = value[7:].partition(" ")
                mapping[pt] = encoding.strip()
        return mapping

    @property
    def direction(self) -> str:
        for value in self.attributes:
            if value in ("sendrecv", "sendonly", "recvonly", "inactive"):
                return value
        return "sendrecv"

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value and value.isdigit() else None

    def __str__(self) -> str:
        head = f"m={self.media} {self.port} {self.protocol} {' '.join(self.formats)}".rstrip()
        return "".join([head, "\r\n", *(f"{k}={v}\r\n" for k, v in self.lines)])


_STATIC = {"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000", "18": "G729/8000"}


def _connection(lines: list[tuple[str, str]]) -> str | None:
    for key, value in lines:
        if key == "c":
            parts = value.split()
            if len(parts) == 3:
                return parts[2].split("/")[0]
    return None


def _set_connection(lines: list[tuple[str, str]], address: str) -> bool:
    family = "IP6" if ":" in address else "IP4"
    for i, (key, _) in enumerate(lines):
        if key == "c":
            lines[i] = ("c", f"IN {family} {address}")
            return True
    return False


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP body."""

    session: list[tuple[str, str]]
    media: list[MediaSection]

    @property
    def connection_address(self) -> str | None:
        """The session-level c= address (media sections may override it)."""
        return _connection(self.session)

    @property
    def origin(self) -> str | None:
        for key, value in self.session:
            if key == "o":
                return value
        return None

    def media_address(self, section: MediaSection) -> str | None:
        return section.connection_address or self.connection_address

    def anchor(self, address: str, ports: list[int]) -> None:
        """Point every media section at ``address`` and the given ports (one per section), and
        bump the origin's version so the peer sees a changed description (RFC 3264 §8)."""
        if len(ports) != len(self.media):
            raise ValueError("one port per media section")
        if not _set_connection(self.session, address):
            self.session.append(("c", f"IN {'IP6' if ':' in address else 'IP4'} {address}"))
        for section, port in zip(self.media, ports, strict=True):
            _set_connection(section.lines, address)
            section.port = port
        for i, (key, value) in enumerate(self.session):
            if key == "o":
                parts = value.split()
                if len(parts) == 6 and parts[2].isdigit():
                    parts[2] = str(int(parts[2]) + 1)
                    parts[5] = address
                    parts[4] = "IP6" if ":" in address else "IP4"
                    self.session[i] = ("o", " ".join(parts))

    def __str__(self) -> str:
        return "".join([*(f"{k}={v}\r\n" for k, v in self.session), *(str(m) for m in self.media)])

    def to_bytes(self) -> bytes:
        return str(self).encode()


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; ParseError (answered with 488 by the caller) when it is not SDP."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("SDP is not UTF-8", status=488) from None
    session: list[tuple[str, str]] = []
    media: list[MediaSection] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise ParseError(f"SDP line {number} is not type=value: {line[:40]!r}", status=488)
        key, value = line[0], line[2:]
        if key == "m":
            parts = value.split()
            if len(parts) < 3 or not parts[1].split("/")[0].isdigit():
                raise ParseError(f"SDP line {number}: bad m= line {value!r}", status=488)
            media.append(MediaSection(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:]))
        elif media:
            media[-1].lines.append((key, value))
        else:
            session.append((key, value))
    if not session or session[0] != ("v", "0"):
        raise ParseError("SDP does not start with v=0", status=488)
    return SessionDescription(session, media)
