"""What the transaction layer asks before it opens a server transaction for a new request.

A request from a source we must not serve is refused outside any transaction: no 100 Trying
first, one answer (or silence) per received request, never a retransmission (RFC 3261 §8.2.6.1
lets a UAS answer statelessly; Kamailio's ``sl_send_reply`` is the model). The policy deciding it
lives above (routing knows the trunks); this module only names the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from callrouter.sip.events import Flow
from callrouter.sip.message import Request

__all__ = ["Admission", "Drop", "Refuse", "Verdict", "admit_everyone"]


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing at all."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer once, statelessly, with ``status`` (and Retry-After when given)."""

    status: int
    retry_after: int | None = None
    """Seconds, for 503 (RFC 3261 §21.5.4)."""


Verdict = Drop | Refuse | None
"""None: open a transaction and hand the request up."""


class Admission(Protocol):
    """The source policy the endpoint consults; ``now`` is always passed in."""

    def admit_datagram(self, host: str, now: float) -> bool:
        """Whether bytes from ``host`` are worth parsing at all (False: banned)."""
        ...

    def screen(self, request: Request, flow: Flow, now: float) -> Verdict:
        """The verdict on a request that matches no open transaction."""
        ...

    def malformed(self, host: str, now: float) -> bool:
        """Count an unparseable message; whether its source may be told so (400)."""
        ...


class _Everyone:
    """The policy of a bare endpoint (unit tests, clients): every source is served."""

    def admit_datagram(self, host: str, now: float) -> bool:
        return True

    def screen(self, request: Request, flow: Flow, now: float) -> Verdict:
        return None

    def malformed(self, host: str, now: float) -> bool:
        return True


admit_everyone: Admission = _Everyone()
