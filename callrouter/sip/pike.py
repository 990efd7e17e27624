"""Flood detection and temporary bans per source address, after Kamailio's pike module.

Each source's requests are counted in fixed windows; a source that sends more than its limit in
one window is banned until ``now + ban_seconds`` and its packets are dropped unanswered (an
answer would only feed the flood). Limits are chosen per request by the caller, so carriers can
have generous ones and strangers strict ones. Both tables are bounded: past ``max_sources`` the
least recently seen entry is forgotten. Pure: ``now`` is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FloodLimit", "Pike"]


@dataclass(frozen=True, slots=True)
class FloodLimit:
    """At most ``requests`` in any ``window`` seconds (Kamailio: reqs_density_per_unit over
    sampling_time_unit)."""

    requests: int
    window: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window <= 0:
            raise ValueError("a flood limit needs at least 1 request in a positive window")


class Pike:
    """Request counters and bans, keyed by source address.

    :param ban_seconds: how long a flooding source stays banned.
    :param max_sources: the bound on each table.
    """

    def __init__(self, ban_seconds: float, max_sources: int = 100_000) -> None:
        self.ban_seconds = ban_seconds
        self.max_sources = max_sources
        self.bans = 0
        """Bans imposed so far."""
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._banned: OrderedDict[str, float] = OrderedDict()

    def banned(self, host: str, now: float) -> bool:
        """Whether ``host`` is banned now (an expired ban is forgotten here)."""
        until = self._banned.get(host)
        if until is None:
            return False
        if until > now:
            return True
        del self._banned[host]
        return False

    def hit(self, host: str, limit: FloodLimit, now: float) -> bool:
        """Count one request from ``host``; True when it is (now) banned."""
        if self.banned(host, now):
            return True
        start, count = self._counts.get(host, (now, 0))
        if now - start >= limit.window or now < start:
            start, count = now, 0
        count += 1
        self._counts[host] = (start, count)
        self._counts.move_to_end(host)
        if len(self._counts) > self.max_sources:
            self._counts.popitem(last=False)
        if count <= limit.requests:
            return False
        del self._counts[host]
        self._banned[host] = now + self.ban_seconds
        self._banned.move_to_end(host)
        if len(self._banned) > self.max_sources:
            self._banned.popitem(last=False)
        self.bans += 1
        return True

    @property
    def banned_count(self) -> int:
        """Sources in the ban table (expired ones included until next looked at)."""
        return len(self._banned)
