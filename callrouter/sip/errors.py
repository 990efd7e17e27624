"""The SIP core's errors.

Remote errors are the peer's fault and carry the status to answer with, or ``None`` when no
response can be formed (no usable Via, an unreadable start line) and the message is dropped.
Local errors are our own misuse of the core. The transport boundary catches ``SipError`` only.
"""

from __future__ import annotations

__all__ = ["LocalError", "MessageTooLarge", "ParseError", "RemoteError", "SipError"]


class SipError(Exception):
    """Base of every error the SIP core raises on purpose."""


class RemoteError(SipError):
    """The peer sent something we refuse.

    :param reason: what failed, in words fit for a log line and a reason phrase.
    :param status: the response code to send, or None when the message must be dropped.
    """

    def __init__(self, reason: str, status: int | None = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    @property
    def can_respond(self) -> bool:
        return self.status is not None


class ParseError(RemoteError):
    """The bytes are not a SIP message we can read (RFC 3261 §25 grammar or §8.2 checks)."""


class MessageTooLarge(ParseError):
    """A message larger than the size limit: a request is answered 513 Message Too Large
    (RFC 3261 §21.5.14) when its Via can be read, a response is dropped.

    :param head: the bytes that hold its header section (a whole datagram, or what a stream
        delivered up to the blank line), from which the 513 is built; the body is never read.
    """

    def __init__(self, head: bytes) -> None:
        super().__init__("message too large", status=None if head[:4].upper() == b"SIP/" else 513)
        self.head = head


class LocalError(SipError):
    """The caller used the core wrongly (a programming error on our side)."""
