"""Where a media leg's packets may come from and where ours go: symmetric RTP, strict latching.

Rules of this file (pure: no sockets, no clock):
- Before latching, we send to the address the leg signalled in SDP.
- A leg latches once, to the first packet's source whose IP matches the signalled IP (the port
  may differ: symmetric RTP behind a port-rewriting firewall). A trunk configured as NATed
  latches to the first source whatever its IP, because its SDP shows a private address.
- After latching, only that exact source is accepted and all our packets go to it, so a third
  party spraying packets at our port (RTP injection) can neither be heard nor take the call.
- A new signalled address (re-INVITE: hold, transfer, new media server) clears the latch, so
  the leg can latch again, still only to the new signalled IP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Address = tuple[str, int]
_UNSPECIFIED = ("0.0.0.0", "::")  # noqa: S104 - compared against, never bound


@dataclass
class LegCounters:
    """What one leg has seen, for the call record and metrics."""

    received: int = 0
    forwarded: int = 0
    rejected: int = 0


@dataclass
class MediaLeg:
    """One side of a relayed call (the caller's or the destination's)."""

    signalled: Address | None = None
    nat: bool = False
    latched: Address | None = None
    counters: LegCounters = field(default_factory=LegCounters)

    def accept(self, source: Address) -> bool:
        """Whether a packet from ``source`` belongs to this leg; latches on the first good one."""
        self.counters.received += 1
        if self.latched is not None:
            ok = source == self.latched
        elif self.nat or (self.signalled is not None and source[0] == self.signalled[0]):
            self.latched = source
            ok = True
        else:
            ok = False
        if not ok:
            self.counters.rejected += 1
        return ok

    @property
    def destination(self) -> Address | None:
        """Where packets for this leg go: the latched source, else the signalled address.

        None while the leg has no usable address: not yet signalled, or on hold with the
        RFC 2543 style ``c=0.0.0.0`` (sending there would reach this host).
        """
        if self.latched is not None:
            return self.latched
        if self.signalled is None or self.signalled[0] in _UNSPECIFIED or not self.signalled[1]:
            return None
        return self.signalled

    def signal(self, address: Address, *, nat: bool | None = None) -> None:
        """New SDP from this leg: a changed address re-opens latching."""
        if nat is not None:
            self.nat = nat
        if address != self.signalled:
            self.signalled = address
            self.latched = None
