"""The SIP core's errors.

Remote errors are the peer's fault and carry the status to answer with, or ``None`` when no
response can be formed (no usable Via, an unreadable start line) and the message is dropped.
Local errors are our own misuse of the core. The transport boundary catches ``SipError`` only.
"""

from __future__ import annotations

__all__ = ["LocalError", "ParseError", "RemoteError", "SipError"]


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


class LocalError(SipError):
    """The caller used the core wrongly (a programming error on our side)."""
