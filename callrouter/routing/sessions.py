"""Visitor sessions: every pool in memory, leases for the swap script, attribution for calls.

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
from callrouter.routing.visit import VisitOrigin, channel, origin_from_page, truncate_ip
from callrouter.store import numbers as number_store
from callrouter.store import pools as pool_store
from callrouter.store import privacy as privacy_store
from callrouter.store import sessions as session_store
from callrouter.store.database import Executor
from callrouter.store.pools import Pool
from callrouter.store.sessions import SessionRecord

__all__ = ["Attribution", "LivePool", "Sessions", "Visit"]

log = logging.getLogger(__name__)


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
            self._visits[record.id] = Visit(record, lease)
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
    ) -> tuple[Visit, str | None]:
        """A new visit; its number (leased, or the pool's default when exhausted)."""
        now = self.clock()
        session_id = uuid.uuid4()
        lease = live.numbers.lease(session_id, visitor_id, now)
        record = SessionRecord(
            id=session_id,
            client_id=live.pool.client_id,
            pool_id=live.pool.id,
            visitor_id=visitor_id,
            number=lease.number if lease else None,
            attribution=_facts(origin_from_page(page_url, referrer)),
            user_agent=(user_agent or "")[:500] or None,
            ip_network=truncate_ip(ip),
            created_at=_wall(now),
            last_seen_at=_wall(now),
            lease_expires_at=_wall(lease.expires_at) if lease else None,
            ended=False,
        )
        visit = Visit(record, lease)
        self._visits[session_id] = visit
        self._dirty[session_id] = visit
        return visit, lease.number if lease else live.default_number

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
            await privacy_store.delete_sessions(self.db, client_id, session_ids)
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
                del self._visits[session_id]

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
            visit = self._visits.pop(session_id, None)
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
