"""Visitor sessions: every pool in memory, leases for the swap script, attribution for calls.

A session is a visit, not a page view: a page view of a visitor whose last activity is within
the pool's lease hold continues their session and keeps its number. The visit's entry page sets
its touch; a page view inside the visit that brings a campaign (utm or click id) is a new touch,
and so is a return visit's entry page unless it is direct. Each session keeps the visitor's
first touch and latest non-direct touch; the pool's ``attribution_model`` says which of the two
its calls and forms are credited to. Clicks within the client's own sites are never a source.

The hot paths (a swap-script request, an INVITE) touch only memory. New and changed sessions
are written behind in batches (``flush``, every second from ``run``); at start, pools are loaded
and the leases still alive (or in grace) are read back before the first call is routed. Pool
settings and membership reload when PostgreSQL notifies a change (``reload``). Visits erased
by a privacy request or the retention purge are forgotten (``forget``): they leave memory,
their numbers are free at once, and the write-behind never writes them back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from callrouter.routing.pool import Lease, NumberPool, PoolStats
from callrouter.routing.visit import (
    VisitOrigin,
    channel,
    has_campaign,
    origin_from_page,
    truncate_ip,
)
from callrouter.store import numbers as number_store
from callrouter.store import pools as pool_store
from callrouter.store import privacy as privacy_store
from callrouter.store import sessions as session_store
from callrouter.store.database import Executor
from callrouter.store.ids import new_id
from callrouter.store.pools import Pool
from callrouter.store.sessions import SessionRecord

__all__ = ["ATTRIBUTION_MODELS", "JOURNEY_LENGTH", "Attribution", "LivePool", "Sessions", "Visit"]

log = logging.getLogger(__name__)

ATTRIBUTION_MODELS = ("first_touch", "last_non_direct")
JOURNEY_LENGTH = 50
"""Page views kept per visit (the latest ones): a journey, not a clickstream archive."""


@dataclass(eq=False)
class LivePool:
    """A pool's settings and its numbers' leases."""

    pool: Pool
    numbers: NumberPool
    default_number: str | None


@dataclass(eq=False)
class Visit:
    """One session in memory."""

    record: SessionRecord
    lease: Lease | None


@dataclass(frozen=True, slots=True)
class Attribution:
    """What a call to a pool number is attributed to."""

    session_id: uuid.UUID | None
    facts: dict[str, Any]


def _wall(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _facts(origin: VisitOrigin) -> dict[str, Any]:
    """The visit's attribution: what the page said, plus the channel in the keys reports and
    filters use (the same keys a static number's label fills)."""
    return {**{k: v for k, v in asdict(origin).items() if v is not None}, **channel(origin)}


def _stamp(seconds: float) -> str:
    """A time inside touches and journeys, written as the API writes its times."""
    return _wall(seconds).isoformat().replace("+00:00", "Z")


def _touch(origin: VisitOrigin, now: float) -> dict[str, Any]:
    return {**_facts(origin), "at": _stamp(now)}


def _credited(touches: dict[str, Any], model: str) -> dict[str, Any]:
    """The attribution calls and forms get: the touch the pool's model picks, without its time."""
    touch = touches["first"] if model == "first_touch" else touches["last"]
    return {k: v for k, v in touch.items() if k != "at"}


def _is_direct(touch: dict[str, Any]) -> bool:
    return bool(touch.get("source") == "direct")


@dataclass(eq=False)
class Sessions:
    """The pools, their leases and the sessions holding them.

    :param db: where sessions are written behind and read back.
    :param clock: seconds since the epoch (the reactor's clock; a fake one in tests).
    """

    db: Executor
    clock: Callable[[], float]
    announce: Callable[[str], None] = field(default=log.info)
    """Where pool reloads are reported (the operator's console)."""
    pools: dict[uuid.UUID, LivePool] = field(default_factory=dict)
    _by_key: dict[str, LivePool] = field(default_factory=dict)
    _by_number: dict[str, LivePool] = field(default_factory=dict)
    _visits: dict[uuid.UUID, Visit] = field(default_factory=dict)
    _by_visitor: dict[tuple[uuid.UUID, str], Visit] = field(default_factory=dict)
    """(pool id, visitor id) -> the visitor's latest visit still in memory."""
    _dirty: dict[uuid.UUID, Visit] = field(default_factory=dict)
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One batch at a time: a form's flush must wait for the batch holding its session."""
    _writing: dict[uuid.UUID, Visit] = field(default_factory=dict)
    """The batch being written now."""
    _erased: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    """Session id -> client id of visits forgotten while their batch was being written: the
    write may land after the erasure's commit, so they are deleted again once it has."""

    async def load(self) -> int:
        """Every pool, then the sessions whose leases live or are in grace; their count."""
        for pool in await pool_store.list_all(self.db):
            await self.reload(pool.id, quiet=True)
        grace = max((p.pool.grace_seconds for p in self.pools.values()), default=0)
        now = self.clock()
        restored = 0
        for record in await session_store.recent(self.db, _wall(now - grace)):
            live = self.pools.get(record.pool_id)
            if live is None or record.number is None or record.lease_expires_at is None:
                continue
            hold = float(live.pool.lease_hold_seconds)
            expires = record.lease_expires_at.timestamp()
            lease = Lease(
                record.number,
                record.id,
                record.visitor_id,
                record.created_at.timestamp(),
                expires - hold,
                hold,
                record.ended,
            )
            if expires > now:
                live.numbers.restore(lease, now)
                restored += 1
            else:
                live.numbers.remember(lease, expires)
            self._remember(Visit(record, lease))
        return restored

    async def reload(self, pool_id: uuid.UUID, *, quiet: bool = False) -> None:
        """Read one pool's settings and numbers again, keeping the leases of numbers it keeps."""
        pool = await pool_store.get_any(self.db, pool_id)
        old = self.pools.pop(pool_id, None)
        if old is not None:
            self._by_key.pop(old.pool.public_key, None)
            for number in old.numbers.numbers:
                self._by_number.pop(number, None)
        if pool is None:
            if old is not None and not quiet:
                self.announce(f"sessions: pool {pool_id} removed")
            return
        members = [n.e164 for n in await number_store.in_pool(self.db, pool_id)]
        numbers = NumberPool(
            members,
            hold=float(pool.lease_hold_seconds),
            grace=float(pool.grace_seconds),
            policy=pool.exhaustion_policy,
        )
        if old is not None:
            numbers.adopt(old.numbers, self.clock())
        default = None
        if pool.default_number_id is not None:
            shown = await number_store.get_any(self.db, pool.default_number_id)
            default = shown.e164 if shown is not None else None
        live = LivePool(pool, numbers, default)
        self.pools[pool.id] = live
        self._by_key[pool.public_key] = live
        for member in members:
            self._by_number[member] = live
        if not quiet:
            self.announce(f"sessions: pool {pool.id} loaded with {len(members)} number(s)")

    # -- the swap script's side ---------------------------------------------------------------

    def pool_by_key(self, public_key: str) -> LivePool | None:
        return self._by_key.get(public_key)

    def start(
        self,
        live: LivePool,
        *,
        visitor_id: str | None,
        page_url: str,
        referrer: str | None,
        user_agent: str | None,
        ip: str | None,
        title: str | None = None,
    ) -> tuple[Visit, str | None]:
        """A page view: it continues the visitor's visit, or starts a new one; the visit's
        number (leased, or the pool's default when exhausted)."""
        now = self.clock()
        origin = origin_from_page(page_url, referrer, live.pool.allowed_origins)
        view = {
            "url": origin.landing_page,  # the page without its query (one string for both)
            "title": (title or "")[:200] or None,
            "at": _stamp(now),
        }
        previous = self._by_visitor.get((live.pool.id, visitor_id)) if visitor_id else None
        if previous is not None and self._continues(previous, live, now):
            return self._continue(previous, live, origin, view, now)
        session_id = new_id()
        lease = live.numbers.lease(session_id, visitor_id, now)
        self._revoke_taken(live, now)
        entry = _touch(origin, now)
        if previous is None:
            touches = {"first": entry, "last": entry}
        else:  # a return visit: the visitor's first touch stays theirs
            last = previous.record.touches.get("last", entry)
            touches = {
                "first": previous.record.touches.get("first", entry),
                "last": last if _is_direct(entry) else entry,
            }
        record = SessionRecord(
            id=session_id,
            client_id=live.pool.client_id,
            pool_id=live.pool.id,
            visitor_id=visitor_id,
            number=lease.number if lease else None,
            attribution=_credited(touches, live.pool.attribution_model),
            user_agent=(user_agent or "")[:500] or None,
            ip_network=truncate_ip(ip),
            created_at=_wall(now),
            last_seen_at=_wall(now),
            lease_expires_at=_wall(lease.expires_at) if lease else None,
            ended=False,
            touches=touches,
            journey=[view],
        )
        visit = Visit(record, lease)
        self._remember(visit)
        self._dirty[session_id] = visit
        return visit, lease.number if lease else live.default_number

    def _continues(self, visit: Visit, live: LivePool, now: float) -> bool:
        """A visit lasts while its visitor was active within the pool's lease hold (30 minutes
        by default, GA4's session timeout)."""
        idle = now - visit.record.last_seen_at.timestamp()
        return visit.record.id in self._visits and idle <= live.pool.lease_hold_seconds

    def _continue(
        self,
        visit: Visit,
        live: LivePool,
        origin: VisitOrigin,
        view: dict[str, Any],
        now: float,
    ) -> tuple[Visit, str | None]:
        """The next page of a visit: same session, same number; a campaign on it is a touch."""
        record = visit.record
        if live.numbers.heartbeat(record.id, now) is None:
            # Its number was taken (reuse_oldest) or its hold ran out: lease one again.
            visit.lease = live.numbers.lease(record.id, record.visitor_id, now)
            self._revoke_taken(live, now)
            record.number = visit.lease.number if visit.lease else None
        if visit.lease is not None:
            record.lease_expires_at = _wall(visit.lease.expires_at)
        if has_campaign(origin):
            record.touches = {**record.touches, "last": _touch(origin, now)}
            record.attribution = _credited(record.touches, live.pool.attribution_model)
        record.journey = [*record.journey, view][-JOURNEY_LENGTH:]
        record.last_seen_at = _wall(now)
        record.ended = False
        self._dirty[record.id] = visit
        return visit, record.number or live.default_number

    def _remember(self, visit: Visit) -> None:
        self._visits[visit.record.id] = visit
        if visit.record.visitor_id is not None:
            self._by_visitor[(visit.record.pool_id, visit.record.visitor_id)] = visit

    def _unremember(self, visit: Visit) -> None:
        self._visits.pop(visit.record.id, None)
        if visit.record.visitor_id is not None:
            key = (visit.record.pool_id, visit.record.visitor_id)
            if self._by_visitor.get(key) is visit:
                del self._by_visitor[key]

    def _revoke_taken(self, live: LivePool, now: float) -> None:
        """Visits whose number ``reuse_oldest`` just gave to another are written as over."""
        for lease in live.numbers.revoked():
            taken = self._visits.get(lease.session_id)
            if taken is not None and taken.lease is lease:
                taken.lease = None
                taken.record.lease_expires_at = _wall(now)
                self._dirty[taken.record.id] = taken

    def visit(self, session_id: uuid.UUID) -> Visit | None:
        return self._visits.get(session_id)

    def heartbeat(self, session_id: uuid.UUID) -> Visit | None:
        visit = self._visits.get(session_id)
        live = self.pools.get(visit.record.pool_id) if visit else None
        if visit is None or live is None:
            return None
        now = self.clock()
        visit.record.last_seen_at = _wall(now)
        if visit.lease is not None and live.numbers.heartbeat(session_id, now) is not None:
            visit.record.lease_expires_at = _wall(visit.lease.expires_at)
        self._dirty[session_id] = visit
        return visit

    def end(self, session_id: uuid.UUID) -> None:
        visit = self._visits.get(session_id)
        live = self.pools.get(visit.record.pool_id) if visit else None
        if visit is None or live is None:
            return
        now = self.clock()
        live.numbers.end(session_id, now)
        visit.record.ended = True
        visit.record.last_seen_at = _wall(now)
        if visit.lease is not None:
            visit.record.lease_expires_at = _wall(visit.lease.expires_at)
        self._dirty[session_id] = visit

    @property
    def live(self) -> int:
        """Sessions held in memory (with a lease, or within their pool's grace)."""
        return len(self._visits)

    def stats(self, pool_id: uuid.UUID) -> PoolStats | None:
        live = self.pools.get(pool_id)
        return live.numbers.stats(self.clock()) if live else None

    # -- the carrier's side ---------------------------------------------------------------------

    def attribute(self, e164: str) -> Attribution | None:
        """The visit a call to ``e164`` belongs to; None when it is not a pool number."""
        live = self._by_number.get(e164)
        if live is None:
            return None
        lease = live.numbers.holder(e164, self.clock())
        visit = self._visits.get(lease.session_id) if lease else None
        if visit is None:
            return Attribution(None, {"source": live.pool.default_source})
        return Attribution(visit.record.id, dict(visit.record.attribution))

    # -- write-behind ---------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write new and changed sessions in one batch; how many.

        A visit forgotten while its batch was in flight is deleted again after the write:
        forgetting cannot stop an INSERT already sent, and one that lands after the erasure's
        commit would bring the session back.
        """
        async with self._flushing:
            await self._delete_erased()
            if not self._dirty:
                return 0
            batch, self._dirty = self._dirty, {}
            self._writing = batch
            try:
                await session_store.save_many(self.db, [v.record for v in batch.values()])
            except Exception:
                # executemany is atomic: nothing landed. Keep the batch for the next round,
                # without what was forgotten meanwhile; a newer change of a session wins.
                kept = {k: v for k, v in batch.items() if k not in self._erased}
                self._dirty = {**kept, **self._dirty}
                for session_id in batch:
                    self._erased.pop(session_id, None)
                raise
            finally:
                self._writing = {}
            await self._delete_erased()
            return len(batch)

    async def _delete_erased(self) -> None:
        """Delete the rows of visits forgotten while they were being written (kept to retry
        when the database fails)."""
        if not self._erased:
            return
        by_client: defaultdict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for session_id, client_id in self._erased.items():
            by_client[client_id].append(session_id)
        for client_id, session_ids in by_client.items():
            await privacy_store.delete_sessions_again(self.db, client_id, session_ids)
            for session_id in session_ids:
                del self._erased[session_id]

    async def run(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until cancelled (then once more)."""
        rounds = 0
        try:
            while True:
                await asyncio.sleep(interval)
                rounds += 1
                try:
                    await self.flush()
                except Exception:
                    log.exception("sessions: write-behind failed; retrying")
                if rounds % 60 == 0:
                    self.forget_expired()
        finally:
            await asyncio.shield(self.flush())

    def forget_expired(self) -> None:
        """Drop visits whose lease (and grace) are over from memory; they stay in PostgreSQL."""
        now = self.clock()
        for session_id, visit in list(self._visits.items()):
            live = self.pools.get(visit.record.pool_id)
            grace = live.pool.grace_seconds if live else 0
            expires = visit.record.lease_expires_at or visit.record.last_seen_at
            if expires + timedelta(seconds=grace) < _wall(now) and session_id not in self._dirty:
                self._unremember(visit)

    # -- erasure ----------------------------------------------------------------------------

    def forget(self, session_ids: Collection[uuid.UUID]) -> None:
        """Drop these visits from memory and from the write-behind queue, releasing their
        leases, so an erased visit is neither written back nor used to attribute a call.

        Called by an erasure or the retention purge (``privacy.erasure.LiveSessions``), which
        delete the rows themselves; a visit in the batch being written now is deleted again
        by ``flush`` once that write has landed. Its number is free for the next visit at
        once: with its visit gone there is nothing left for the grace period to protect.
        """
        now = self.clock()
        for session_id in session_ids:
            self._dirty.pop(session_id, None)
            visit = self._visits.get(session_id)
            if visit is not None:
                self._unremember(visit)
            writing = self._writing.get(session_id)
            if writing is not None:
                self._erased[session_id] = writing.record.client_id
            if visit is None:
                continue
            live = self.pools.get(visit.record.pool_id)
            if live is not None and visit.lease is not None:
                _release_at_once(live.numbers, visit.lease, session_id, now)


def _release_at_once(numbers: NumberPool, lease: Lease, session_id: uuid.UUID, now: float) -> None:
    """Free an erased visit's number, as released longer ago than the pool's grace, and keep
    nothing of the visitor in the pool. A lease another visit of the same visitor took over
    (``NumberPool.lease`` rebinds it) is theirs and stays."""
    numbers.expire(now)
    if lease.session_id != session_id:
        return
    released_at = now - numbers.grace - 1.0
    if numbers.session(session_id, now) is not None:
        # Ended so long ago that its hold and grace are both over: expire() releases it.
        numbers.end(session_id, released_at - lease.hold)
        numbers.expire(now)
    elif numbers.holder(lease.number, now) is lease:
        numbers.remember(lease, released_at)  # in its grace: end the grace now
    lease.visitor_id = None
