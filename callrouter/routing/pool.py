"""A node's index of one pool's leases: who holds each tracking number, in memory.

Rules of this file:
- Pure: every method takes ``now`` (seconds); nothing here reads a clock or does I/O.
- PostgreSQL decides every lease (``store.leases``); this index mirrors its rows so the hot
  paths (each INVITE, each swap-script request) are a dict access. Rows arrive from this
  node's own statements and from other nodes' NOTIFYs, in any order: each carries the row's
  version and an older version never replaces a newer one.
- A lease lives until ``expires_at`` (its page's last heartbeat plus the pool's hold); after
  that its number still attributes calls to it for ``grace`` seconds.
- Exhaustions are counted where they happen (the node that gave the default number or took a
  number in its grace); the sizing advice covers the most visits that wanted a number at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from uuid import UUID

__all__ = ["Lease", "NumberPool", "PoolStats"]


@dataclass(slots=True)
class Lease:
    """A number's holder as last seen: live until ``expires_at``, then within grace."""

    number: str
    session_id: UUID
    visitor_id: str | None
    leased_at: float
    last_seen: float
    expires_at: float
    ended: bool = False
    version: int = 0


@dataclass(slots=True)
class PoolStats:
    """What the operator sees about a pool's sizing."""

    size: int
    leased: int
    peak: int
    exhaustions: int
    recommended_size: int


@dataclass(eq=False)
class NumberPool:
    """One pool's numbers and their latest holders.

    :param numbers: the pool's tracking numbers (E.164).
    :param hold: seconds a lease outlives its last heartbeat.
    :param grace: seconds a released number still attributes calls to its last holder.
    :param policy: ``reuse_oldest`` or ``default_number`` (``store.leases`` applies it).
    """

    numbers: list[str]
    hold: float = 1800.0
    grace: float = 1800.0
    policy: str = "reuse_oldest"
    exhaustions: int = 0
    peak: int = 0
    peak_demand: int = 0
    _overflow: list[float] = field(default_factory=list)
    _holders: dict[str, Lease] = field(default_factory=dict)
    _versions: dict[str, int] = field(default_factory=dict)
    """The newest row version seen per number (a freed number has a version, no holder)."""
    _by_session: dict[UUID, Lease] = field(default_factory=dict)
    _members: frozenset[str] = frozenset()
    _live: set[str] = field(default_factory=set)
    """Numbers whose holder was live when last looked at (``leased`` prunes it)."""
    _expiry: list[tuple[float, str]] = field(default_factory=list)
    """(end, number) when ``leased`` looks at a number again, soonest first: one entry per
    number with a live lease (plus, rarely, one a sooner entry superseded)."""
    _due: dict[str, float] = field(default_factory=dict)
    """The end of each number's current entry in ``_expiry``."""

    def __post_init__(self) -> None:
        self._members = frozenset(self.numbers)

    def apply(self, number: str, lease: Lease | None, version: int, now: float) -> bool:
        """The row of ``number`` at ``version``: ``lease`` holds it (or held it last), or
        nobody does. False (and nothing changes) when a newer version was seen already."""
        if number not in self._members:
            return False  # not (or no longer) this pool's number
        if self._versions.get(number, -1) >= version:
            return False
        self._versions[number] = version
        old = self._holders.pop(number, None)
        if old is not None and self._by_session.get(old.session_id) is old:
            del self._by_session[old.session_id]
        self._live.discard(number)
        if lease is not None:
            self._holders[number] = lease
            self._by_session[lease.session_id] = lease
            if lease.expires_at > now:
                self._live.add(number)
                self._watch(number, lease.expires_at)
                self.peak = max(self.peak, self.leased(now))
                self._note_demand(now)
        return True

    def extend(
        self, session_id: UUID, now: float, expires_at: float, *, ended: bool
    ) -> Lease | None:
        """Renew a live lease here alone (its row cannot be written now); None if it is over."""
        lease = self.session(session_id, now)
        if lease is not None:
            lease.last_seen, lease.expires_at, lease.ended = now, expires_at, ended
            # A later end needs no entry: the number's entry comes due first and moves itself
            # on (an entry a heartbeat was a live page's 30 a hold, and a push each); a sooner
            # one (the pool's hold made shorter) does.
            self._watch(lease.number, expires_at)
        return lease

    def session(self, session_id: UUID, now: float) -> Lease | None:
        """The live lease of a session."""
        lease = self._by_session.get(session_id)
        return lease if lease is not None and lease.expires_at > now else None

    def holder(self, number: str, now: float) -> Lease | None:
        """Whose call this is: the live lease of ``number``, else its last holder within grace."""
        lease = self._holders.get(number)
        if lease is None or now - lease.expires_at > self.grace:
            return None
        return lease

    def leased(self, now: float) -> int:
        """Live leases now (O(leases ended since the last call), amortised)."""
        while self._expiry and self._expiry[0][0] <= now:
            end, number = heapq.heappop(self._expiry)
            if self._due.get(number) != end:
                continue  # superseded by a sooner entry
            holder = self._holders.get(number)
            if holder is not None and holder.expires_at > now:
                self._due[number] = holder.expires_at  # renewed since: its new end
                heapq.heappush(self._expiry, (holder.expires_at, number))
            else:
                del self._due[number]
                self._live.discard(number)
        return len(self._live)

    def _watch(self, number: str, end: float) -> None:
        """Have ``leased`` look at ``number`` by ``end``; an entry due sooner already will."""
        due = self._due.get(number)
        if due is None or end < due:
            self._due[number] = end
            heapq.heappush(self._expiry, (end, number))

    def note_exhausted(self, now: float, *, wants_number: bool) -> None:
        """The pool had no number out of its grace for a visit; ``wants_number``: the visit (or
        the one whose number was taken) is shown the default number for a hold."""
        self.exhaustions += 1
        if wants_number:
            heapq.heappush(self._overflow, now + self.hold)
        self._note_demand(now)

    def forget(self, session_id: UUID) -> None:
        """An erased visit: its lease leaves the index at once (the database freed its row)."""
        lease = self._by_session.pop(session_id, None)
        if lease is not None and self._holders.get(lease.number) is lease:
            del self._holders[lease.number]
            self._live.discard(lease.number)

    def stats(self, now: float) -> PoolStats:
        """Sizes and counters. The recommendation covers the most visits ever wanting a number
        at once (leases plus those served while exhausted), with a quarter more for headroom
        so that a new visit rarely gets a number still in another visit's grace window."""
        self._note_demand(now)
        return PoolStats(
            len(self.numbers),
            self.leased(now),
            self.peak,
            self.exhaustions,
            max(1, -(-self.peak_demand * 5 // 4)),
        )

    def _note_demand(self, now: float) -> None:
        while self._overflow and self._overflow[0] <= now:
            heapq.heappop(self._overflow)
        self.peak_demand = max(self.peak_demand, self.leased(now) + len(self._overflow))
