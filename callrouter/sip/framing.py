"""Stream framing for SIP over TCP and TLS (RFC 3261 §18.3): messages split by Content-Length.

Bytes go in as they arrive; whole messages (still unparsed bytes) come out. CRLF keep-alives
between messages (RFC 5626 §3.5.1) are consumed and answered with a single CRLF.

A framing error ends the stream: there is no way to find where the next message starts. The
messages framed before it are still delivered, and the error is kept in ``failed`` for the
transport to answer (a 513 for a request too large whose head arrived) and close.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from callrouter.sip.errors import MessageTooLarge, ParseError

__all__ = ["StreamFramer"]

# Lines end in CRLF: ``$`` (before the LF) needs the CR taken, or a Content-Length that is
# not the last header field would go unseen.
_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


@dataclass(slots=True)
class StreamFramer:
    """Cuts a byte stream into messages.

    :param max_message_bytes: a head or a whole message beyond this is a framing error (the
        ``[sip] max_message_bytes`` setting, the bound the parser applies to datagrams too).
    """

    max_message_bytes: int = 65_535
    failed: ParseError | None = None
    """Why the stream cannot be read any further; once set, nothing more is framed."""
    _buffer: bytearray = field(default_factory=bytearray)
    _keepalive_pings: int = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages now complete (those before a failure)."""
        if self.failed is not None:
            return []
        self._buffer += data
        messages: list[bytes] = []
        while self._skip_keepalives():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_message_bytes:
                    # No blank line in a whole message's worth: nothing says where to answer.
                    self._fail(ParseError("header section too large on stream", status=None))
                break
            head = bytes(self._buffer[: end + 4])
            match = _LENGTH.search(head)
            if match is None:
                self._fail(ParseError("message on a stream without Content-Length", status=None))
                break
            total = end + 4 + int(match.group(1))
            if total > self.max_message_bytes:
                self._fail(MessageTooLarge(head))
                break
            if len(self._buffer) < total:
                break
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
        return messages

    @property
    def partial(self) -> bool:
        """Whether part of a message is buffered, waiting for the rest."""
        return bool(self._buffer)

    def take_pongs(self) -> int:
        """How many double-CRLF pings arrived since the last call; each wants a CRLF back."""
        pings, self._keepalive_pings = self._keepalive_pings, 0
        return pings

    def _fail(self, error: ParseError) -> None:
        self.failed = error
        self._buffer.clear()

    def _skip_keepalives(self) -> bool:
        """Drop CRLFs before a message; True when a message (or part of one) is waiting."""
        i = 0
        buffer = self._buffer
        while i < len(buffer) and buffer[i] in b"\r\n":
            if buffer[i : i + 4] == b"\r\n\r\n":
                self._keepalive_pings += 1
                i += 4
            else:
                i += 1
        if i:
            del buffer[:i]
        return bool(buffer)
