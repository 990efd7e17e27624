"""The hot number pool: tracking numbers leased to visitor sessions, all in memory.

Rules of this file:
- Pure: every method takes ``now`` (seconds); nothing here reads a clock or does I/O. The
  write-behind to PostgreSQL reads ``changes()``.
- Every lookup the hot paths make is a dict access: the number a carrier dialled (each INVITE),
  the session of a swap-script request, the visitor coming back.
- A lease lives while its page sends heartbeats, plus ``hold`` seconds after the last one.
  Released numbers queue in release order; the next lease takes the number released longest
  ago, and prefers numbers out of their grace window (so a late call still finds its visit).
- Exhausted (every number leased, or every free number still in grace): ``reuse_oldest`` takes
  the free number released longest ago even inside its grace; with none free at all it takes
  the lease of the least recently active session (the page idle longest: leases are kept in
  order of their last heartbeat), which loses its number. Under ``default_number`` the visitor
  gets the pool's default number and no lease. Each exhaustion is counted. Outside reuse, a
  number with a live lease is never given to a second session.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from uuid import UUID

__all__ = ["Lease", "NumberPool", "PoolStats"]


@dataclass(slots=True)
class Lease:
    """One number held by one session."""

    number: str
    session_id: UUID
    visitor_id: str | None
    leased_at: float
    last_seen: float
    hold: float
    ended: bool = False

    @property
    def expires_at(self) -> float:
        return self.last_seen + self.hold


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
    """One pool's numbers.

    :param numbers: the pool's tracking numbers (E.164).
    :param hold: seconds a lease outlives its last heartbeat.
    :param grace: seconds a released number still attributes calls to its last holder.
    :param policy: ``reuse_oldest`` or ``default_number`` (see the module rules).
    """

    numbers: list[str]
    hold: float = 1800.0
    grace: float = 1800.0
    policy: str = "reuse_oldest"
    exhaustions: int = 0
    peak: int = 0
    peak_demand: int = 0
    _overflow: list[float] = field(default_factory=list)
    _free: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _leases: OrderedDict[str, Lease] = field(default_factory=OrderedDict)
    """Live leases, least recently active first."""
    _by_session: dict[UUID, Lease] = field(default_factory=dict)
    _by_visitor: dict[str, Lease] = field(default_factory=dict)
    _last_holder: dict[str, tuple[Lease, float]] = field(default_factory=dict)
    _expiry: list[tuple[float, str, UUID]] = field(default_factory=list)
    _changed: dict[UUID, Lease] = field(default_factory=dict)
    _revoked: list[Lease] = field(default_factory=list)

    def __post_init__(self) -> None:
        for number in self.numbers:
            self._free[number] = float("-inf")  # never leased: released "longest ago"

    # -- the swap script's side ---------------------------------------------------------------

    def lease(self, session_id: UUID, visitor_id: str | None, now: float) -> Lease | None:
        """A number for a new session; the visitor's own live lease when they come back.

        None means the pool is exhausted under ``default_number`` (or has no free number at
        all): show the pool's default number.
        """
        self.expire(now)
        if visitor_id is not None:
            mine = self._by_visitor.get(visitor_id)
            if mine is not None:
                self._rebind(mine, session_id, now)
                return mine
        number = self._pick(now)
        if number is None:
            return None
        lease = Lease(number, session_id, visitor_id, now, now, self.hold)
        del self._free[number]
        self._leases[number] = lease
        self._by_session[session_id] = lease
        if visitor_id is not None:
            self._by_visitor[visitor_id] = lease
        self.peak = max(self.peak, len(self._leases))
        self._note_demand(now)
        self._schedule(lease)
        self._changed[session_id] = lease
        return lease

    def heartbeat(self, session_id: UUID, now: float) -> Lease | None:
        """The page is still open: the lease lives ``hold`` seconds from now."""
        lease = self._by_session.get(session_id)
        if lease is None or lease.expires_at <= now:
            return None
        lease.last_seen = now
        lease.ended = False
        self._leases.move_to_end(lease.number)
        self._schedule(lease)
        self._changed[session_id] = lease
        return lease

    def end(self, session_id: UUID, now: float) -> None:
        """The page was closed: the hold starts now (a call may still follow the visit)."""
        lease = self._by_session.get(session_id)
        if lease is not None:
            lease.last_seen = now
            lease.ended = True
            self._leases.move_to_end(lease.number)
            self._schedule(lease)
            self._changed[session_id] = lease

    def session(self, session_id: UUID, now: float) -> Lease | None:
        """The live lease of a session."""
        lease = self._by_session.get(session_id)
        return lease if lease is not None and lease.expires_at > now else None

    # -- the carrier's side ---------------------------------------------------------------------

    def holder(self, number: str, now: float) -> Lease | None:
        """Whose call this is: the live lease of ``number``, else its last holder within grace."""
        self.expire(now)
        lease = self._leases.get(number)
        if lease is not None:
            return lease
        last = self._last_holder.get(number)
        if last is not None and now - last[1] <= self.grace:
            return last[0]
        return None

    # -- housekeeping ---------------------------------------------------------------------------

    def expire(self, now: float) -> list[Lease]:
        """Release the leases whose hold has run out (O(expired), amortised)."""
        released = []
        while self._expiry and self._expiry[0][0] <= now:
            at, number, session_id = heapq.heappop(self._expiry)
            lease = self._leases.get(number)
            if lease is None or lease.session_id != session_id or lease.expires_at != at:
                continue  # a stale entry: the lease was renewed or is gone
            self._release(lease, at)
            released.append(lease)
        return released

    def revoked(self) -> list[Lease]:
        """Leases ``reuse_oldest`` took from their sessions since the last call: their hold is
        over (``expires_at`` is when they were taken), so their visits can be written so."""
        taken, self._revoked = self._revoked, []
        return taken

    def changes(self) -> list[Lease]:
        """Leases created or touched since the last call (for the write-behind)."""
        changed, self._changed = list(self._changed.values()), {}
        return changed

    def restore(self, lease: Lease, now: float) -> None:
        """Put back a lease read from the database after a restart (if it still lives)."""
        if lease.expires_at <= now or lease.number not in self._free:
            return
        del self._free[lease.number]
        self._leases[lease.number] = lease
        self._by_session[lease.session_id] = lease
        if lease.visitor_id is not None:
            self._by_visitor[lease.visitor_id] = lease
        self.peak = max(self.peak, len(self._leases))
        self._schedule(lease)

    def remember(self, lease: Lease, released_at: float) -> None:
        """A lease read back after a restart that has ended: its number attributes calls to it
        for the rest of its grace, and queues for reuse in release order."""
        if lease.number in self._free:
            self._free[lease.number] = released_at
            self._free.move_to_end(lease.number)
            self._last_holder[lease.number] = (lease, released_at)

    def adopt(self, old: NumberPool, now: float) -> None:
        """Take over the leases and counters of this pool's previous settings (a reload)."""
        for number, (lease, at) in old._last_holder.items():
            if number in self._free and number not in old._leases:
                self.remember(lease, at)
        for lease in old._leases.values():
            lease.hold = self.hold
            self.restore(lease, now)
        self.exhaustions, self.peak = old.exhaustions, old.peak
        self.peak_demand = old.peak_demand

    def stats(self, now: float) -> PoolStats:
        """Sizes and counters. The recommendation covers the most visits ever wanting a number
        at once (leases plus those served while exhausted), with a quarter more for headroom
        so that a new visit rarely gets a number still in another visit's grace window."""
        self._note_demand(now)
        return PoolStats(
            len(self.numbers),
            len(self._leases),
            self.peak,
            self.exhaustions,
            max(1, -(-self.peak_demand * 5 // 4)),
        )

    # -- internals ----------------------------------------------------------------------------

    def _pick(self, now: float) -> str | None:
        number = next(iter(self._free), None)
        if number is not None and now - self._free[number] > self.grace:
            return number
        # Exhausted: nothing free, or every free number still attributes calls to its last visit.
        self.exhaustions += 1
        if self.policy == "reuse_oldest":
            if number is not None:
                return number
            if self._leases:
                return self._revoke(next(iter(self._leases.values())), now)
        heapq.heappush(self._overflow, now + self.hold)  # a visit shown the default number
        self._note_demand(now)
        return None

    def _revoke(self, lease: Lease, now: float) -> str:
        """Take the number of the session idle longest; calls to it now reach the new visit."""
        lease.last_seen = now - lease.hold
        lease.ended = True
        self._release(lease, now)
        self._revoked.append(lease)
        heapq.heappush(self._overflow, now + self.hold)  # its page still wants a number
        self._note_demand(now)
        return lease.number

    def _note_demand(self, now: float) -> None:
        while self._overflow and self._overflow[0] <= now:
            heapq.heappop(self._overflow)
        self.peak_demand = max(self.peak_demand, len(self._leases) + len(self._overflow))

    def _release(self, lease: Lease, at: float) -> None:
        del self._leases[lease.number]
        self._by_session.pop(lease.session_id, None)
        if lease.visitor_id is not None and self._by_visitor.get(lease.visitor_id) is lease:
            del self._by_visitor[lease.visitor_id]
        self._free[lease.number] = at
        self._last_holder[lease.number] = (lease, at)

    def _rebind(self, lease: Lease, session_id: UUID, now: float) -> None:
        """The same visitor opened a new page: the new session takes over the lease."""
        if lease.session_id != session_id:
            self._by_session.pop(lease.session_id, None)
            lease.session_id = session_id
            self._by_session[session_id] = lease
        lease.last_seen = now
        lease.ended = False
        self._leases.move_to_end(lease.number)
        self._schedule(lease)
        self._changed[session_id] = lease

    def _schedule(self, lease: Lease) -> None:
        heapq.heappush(self._expiry, (lease.expires_at, lease.number, lease.session_id))
