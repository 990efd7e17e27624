"""Stream framing for SIP over TCP and TLS (RFC 3261 §18.3): messages split by Content-Length.

Bytes go in as they arrive; whole messages (still unparsed bytes) come out. CRLF keep-alives
between messages (RFC 5626 §3.5.1) are consumed and answered with a single CRLF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from callrouter.sip.errors import ParseError

__all__ = ["StreamFramer"]

_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.IGNORECASE | re.MULTILINE
)


@dataclass(slots=True)
class StreamFramer:
    """Cuts a byte stream into messages.

    :param max_message_bytes: a head or body beyond this is a framing error (the connection is
        then closed: on a stream there is no way to resynchronise).
    """

    max_message_bytes: int = 65_535
    _buffer: bytearray = field(default_factory=bytearray)
    _keepalive_pings: int = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages now complete."""
        self._buffer += data
        messages: list[bytes] = []
        while True:
            stripped = self._skip_keepalives()
            if not stripped:
                return messages
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_message_bytes:
                    raise ParseError("header section too large on stream", status=None)
                return messages
            head = bytes(self._buffer[:end])
            match = _LENGTH.search(head)
            if match is None:
                raise ParseError("message on a stream without Content-Length", status=None)
            total = end + 4 + int(match.group(1))
            if total > self.max_message_bytes:
                raise ParseError("message too large on stream", status=None)
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    @property
    def partial(self) -> bool:
        """Whether part of a message is buffered, waiting for the rest."""
        return bool(self._buffer)

    def take_pongs(self) -> int:
        """How many double-CRLF pings arrived since the last call; each wants a CRLF back."""
        pings, self._keepalive_pings = self._keepalive_pings, 0
        return pings

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
