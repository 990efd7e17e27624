"""Session timers (RFC 4028): the Session-Expires and Min-SE header fields, read and written.

Rules of this file:
- Pure functions of messages: no clock, no state. The call controller (routing/) decides what
  to do with an interval; this file only says what the headers mean.
- RFC 4028 §4 and §5 grammar::

      Session-Expires  =  ("Session-Expires" / "x") HCOLON delta-seconds
                          *(SEMI se-params)
      se-params        =  refresher-param / generic-param
      refresher-param  =  "refresher" EQUAL  ("uas" / "uac")
      Min-SE  =  "Min-SE" HCOLON delta-seconds *(SEMI generic-param)

- A value that is not delta-seconds is the peer's error (400 naming the header); an unknown
  refresher value is a generic parameter we carry but do not act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.sip.errors import RemoteError
from callrouter.sip.headers import Headers
from callrouter.sip.message import Message

__all__ = [
    "MIN_SE",
    "SessionExpires",
    "bye_before",
    "min_se",
    "session_expires",
    "supports_timer",
]

MIN_SE = 90
"""RFC 4028 §4: the smallest session interval anyone may ask for, in seconds."""

_MAX_DELTA = 2**32 - 1
"""RFC 3261 §25.1 delta-seconds ceiling (larger values are refused rather than wrapped)."""


@dataclass(frozen=True)
class SessionExpires:
    """A Session-Expires header field."""

    interval: int
    """The session interval, in seconds."""
    refresher: str | None = None
    """``uac`` or ``uas``: who refreshes (None: not said)."""

    def __str__(self) -> str:
        suffix = f";refresher={self.refresher}" if self.refresher else ""
        return f"{self.interval}{suffix}"


def _delta(value: str, name: str) -> int:
    text = value.split(";", 1)[0].strip()
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_DELTA:
        raise RemoteError(f"Bad {name}", status=400)
    return int(text)


def session_expires(message: Message) -> SessionExpires | None:
    """The message's Session-Expires (None without one); RemoteError(400) when unreadable."""
    value = message.headers.get("session-expires")
    if value is None:
        return None
    interval = _delta(value, "Session-Expires")
    refresher = None
    for param in value.split(";")[1:]:
        key, _, given = param.partition("=")
        if key.strip().lower() == "refresher" and given.strip().lower() in ("uac", "uas"):
            refresher = given.strip().lower()
    return SessionExpires(interval, refresher)


def min_se(message: Message) -> int | None:
    """The message's Min-SE in seconds (None without one); RemoteError(400) when unreadable."""
    value = message.headers.get("min-se")
    return None if value is None else _delta(value, "Min-SE")


def supports_timer(headers: Headers) -> bool:
    """Whether the sender said ``Supported: timer`` (or required it)."""
    tokens = [*headers.get_all("supported"), *headers.get_all("require")]
    return "timer" in {t.strip().lower() for t in tokens}


def bye_before(interval: float) -> float:
    """RFC 4028 §10: seconds after a refresh at which the side that does not refresh ends the
    session: before it expires, by the smaller of 32 seconds and a third of the interval."""
    return interval - min(32.0, interval / 3)
