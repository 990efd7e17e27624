"""Visitor sessions: every pool's leases indexed in memory, sessions for the swap script,
attribution for calls; PostgreSQL holds the truth, shared by every node.

A session is a visit, not a page view: a page view of a visitor whose last activity is within
the pool's lease hold continues their session and keeps its number. The visit's entry page sets
its touch; a page view inside the visit that brings a campaign (utm or click id) is a new touch,
and so is a return visit's entry page unless it is direct. Each session keeps the visitor's
first touch and latest non-direct touch; the pool's ``attribution_model`` says which of the two
its calls and forms are credited to. Clicks within the client's own sites are never a source.

Each swap-script request is written in one transaction: the lease (``store.leases``, one row
per number) and the session row are written before the page gets its answer, so the next
request of the visit, or the visitor's call, may reach any node. Page views that may start a
visit share their transaction with the others arriving meanwhile on this node (a group commit,
``group_commit``): one statement reads the visitors' latest sessions, one takes every new
visit's lease, one writes their sessions. Each node keeps an index of the leases and a
cache of the visits that hold them, so an INVITE is attributed without a round trip. The index
follows the database through NOTIFYs (``on_lease``, ``on_session``); it is read again whole at
start and after the LISTEN connection was lost (``resync``), and a number it cannot vouch for
is read at call time (``prepare_call``). A heartbeat or page close of a lease live in the
index is answered from memory and written behind, with the others of the last
``FLUSH_SECONDS``, in one statement (``flush``), and by a stopping node before it closes its
connections (``stop``); ``store.leases`` gives no number away while such a renewal may be on
its way. While the database is away, new sessions are refused (the API
answers 503: a lease given without it could be given twice) and those renewals wait in memory
until it is back. Visits erased by
a privacy request or the retention purge are forgotten (``forget``); the database frees their
numbers on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from callrouter.routing.group_commit import GroupCommit
from callrouter.routing.pool import Lease, NumberPool, PoolStats
from callrouter.routing.visit import (
    VisitOrigin,
    channel,
    has_campaign,
    origin_from_page,
    truncate_ip,
)
from callrouter.store import leases as lease_store
from callrouter.store import numbers as number_store
from callrouter.store import pools as pool_store
from callrouter.store import sessions as session_store
from callrouter.store.availability import OUTAGE_ERRORS
from callrouter.store.ids import new_id
from callrouter.store.leases import LeaseRow
from callrouter.store.pools import Pool
from callrouter.store.sessions import SessionRecord

__all__ = ["ATTRIBUTION_MODELS", "JOURNEY_LENGTH", "Attribution", "LivePool", "Sessions", "Visit"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTRIBUTION_MODELS = ("first_touch", "last_non_direct")
JOURNEY_LENGTH = 50
"""Page views kept per visit (the latest ones): a journey, not a clickstream archive."""
TRANSACTION_TRIES = 3
"""Attempts at a swap-script request's transaction when PostgreSQL undoes it to break a
deadlock."""
CALL_READ_TIMEOUT = 1.0
"""Seconds a call waits for the database to vouch for its number before memory answers."""
NEW_VISIT_BATCHES = 4
"""Batches of one pool's new visits written at once. On the 2 shared cores of
``bench/sessions.py`` four served about twice the visits per second of one: a batch spends
most of its time waiting for its five round trips, and another batch can use that wait."""
STOP_FLUSH_SECONDS = 5.0
"""How long a stopping node tries to write the renewals it still holds (the database may be
away) before it gives them up and says how many."""
_STOP_FLUSH_ERRORS: tuple[type[Exception], ...] = (*OUTAGE_ERRORS, asyncpg.DeadlockDetectedError)
"""What gives up a stop's flush: the database away (or too slow), or deadlocks every try."""
_Started = tuple[SessionRecord, lease_store.Taken | None]
"""A visit started by a group commit: its record as written, and its lease if it got one."""


@dataclass(eq=False)
class LivePool:
    """A pool's settings and its numbers' leases."""

    pool: Pool
    numbers: NumberPool
    default_number: str | None


@dataclass(eq=False)
class Visit:
    """One session in memory: its record as last read or written here."""

    record: SessionRecord


@dataclass(frozen=True, slots=True)
class Attribution:
    """What a call to a pool number is attributed to."""

    session_id: uuid.UUID | None
    facts: dict[str, Any]
    journey: list[dict[str, Any]] = field(default_factory=list)
    """The visit's page views up to the call (url, title, at), oldest first."""


def _wall(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _facts(origin: VisitOrigin) -> dict[str, Any]:
    """The visit's attribution: what the page said, plus the channel in the keys reports and
    filters use (the same keys a static number's label fills)."""
    # Its fields are strings: read them as they are (``asdict`` copies deeply, per page view).
    facts = {f.name: getattr(origin, f.name) for f in fields(origin)}
    return {**{k: v for k, v in facts.items() if v is not None}, **channel(origin)}


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

    :param db: where leases and sessions are stored (shared by every node).
    :param clock: seconds since the epoch (the reactor's clock; a fake one in tests).
    """

    db: asyncpg.Pool[asyncpg.Record]
    clock: Callable[[], float]
    announce: Callable[[str], None] = field(default=log.info)
    """Where pool reloads are reported (the operator's console)."""
    pools: dict[uuid.UUID, LivePool] = field(default_factory=dict)
    trusted: bool = False
    """The index follows the database: read whole since LISTEN last (re)connected."""
    _by_key: dict[str, LivePool] = field(default_factory=dict)
    _by_number: dict[str, LivePool] = field(default_factory=dict)
    _visits: dict[uuid.UUID, Visit] = field(default_factory=dict)
    _by_visitor: dict[tuple[uuid.UUID, str], uuid.UUID] = field(default_factory=dict)
    """(pool, visitor id) -> the visitor's latest session seen here (it may be out of memory)."""
    _pending: dict[uuid.UUID, lease_store.Renewal] = field(default_factory=dict)
    """Leases renewed from memory, to write (the latest renewal per session)."""
    _flusher: asyncio.Task[None] | None = None
    _reload_began: dict[uuid.UUID, int] = field(default_factory=dict)
    """Per pool, how many reloads have begun (the last one begun is the one kept)."""
    _heard_while_reloading: dict[uuid.UUID, list[LeaseRow]] = field(default_factory=dict)
    """Per pool being reloaded, the lease changes heard since its reload began."""
    _new_visits: GroupCommit[LivePool, _PageView, _Started | None] = field(init=False)
    """Page views that may start visits, written together (``_start_visits``)."""

    def __post_init__(self) -> None:
        self._new_visits = GroupCommit(self._start_visits_undeadlocked, in_flight=NEW_VISIT_BATCHES)

    async def _start_visits_undeadlocked(
        self, live: LivePool, pages: list[_PageView]
    ) -> list[_Started | None]:
        return await _undeadlocked(lambda: self._start_visits(live, pages))

    async def load(self) -> int:
        """Every pool's leases, and the visits of those live or in grace; the live leases."""
        await self.resync()
        now = self.clock()
        return sum(live.numbers.leased(now) for live in self.pools.values())

    async def resync(self) -> None:
        """Read every pool and lease again: at start, and when the LISTEN connection came back
        (changes made while it was down were never heard)."""
        self.trusted = False
        known = {pool.id for pool in await pool_store.list_all(self.db)}
        for pool_id in set(self.pools) - known:
            await self.reload(pool_id, quiet=True)
        for pool_id in known:
            await self.reload(pool_id, quiet=True)
        self.trusted = True

    def untrust(self) -> None:
        """The LISTEN connection is lost: changes may go unheard until ``resync``."""
        self.trusted = False

    async def reload(self, pool_id: uuid.UUID, *, quiet: bool = False) -> None:
        """Read one pool's settings, numbers and leases again (counters carry over).

        The pool answers from what it was until the new one is read: a page view while a
        number is added to the pool must still find it. Lease changes heard meanwhile are
        applied to both, and of reloads of one pool that overlap (each change NOTIFYs) only
        the one begun last is kept.
        """
        began = self._reload_began[pool_id] = self._reload_began.get(pool_id, 0) + 1
        heard = self._heard_while_reloading.setdefault(pool_id, [])
        try:
            pool = await pool_store.get_any(self.db, pool_id)
            live = await self._read_pool(pool) if pool is not None else None
        finally:
            if self._reload_began[pool_id] == began:
                del self._heard_while_reloading[pool_id]
        if self._reload_began[pool_id] != began:
            return  # a later reload of this pool reads newer rows
        old = self.pools.pop(pool_id, None)
        if old is not None:
            self._by_key.pop(old.pool.public_key, None)
            for number in old.numbers.numbers:
                self._by_number.pop(number, None)
        if live is None:
            if old is not None and not quiet:
                self.announce(f"sessions: pool {pool_id} removed")
            return
        numbers = live.numbers
        if old is not None:
            numbers.exhaustions, numbers.peak = old.numbers.exhaustions, old.numbers.peak
            numbers.peak_demand = old.numbers.peak_demand
        now = self.clock()
        for row in heard:
            numbers.apply(row.number, _lease(row), row.version, now)
        self.pools[live.pool.id] = live
        self._by_key[live.pool.public_key] = live
        for member in numbers.numbers:
            self._by_number[member] = live
        if not quiet:
            self.announce(f"sessions: pool {pool_id} loaded with {len(numbers.numbers)} number(s)")

    async def _read_pool(self, pool: Pool) -> LivePool:
        """A pool as the database has it now: its numbers, their leases and their visits."""
        rows = await lease_store.of_pool(self.db, pool.id)
        numbers = NumberPool(
            [row.number for row in rows],
            hold=float(pool.lease_hold_seconds),
            grace=float(pool.grace_seconds),
            policy=pool.exhaustion_policy,
        )
        default = None
        if pool.default_number_id is not None:
            shown = await number_store.get_any(self.db, pool.default_number_id)
            default = shown.e164 if shown is not None else None
        live = LivePool(pool, numbers, default)
        now = self.clock()
        for row in rows:
            numbers.apply(row.number, _lease(row), row.version, now)
        await self._read_visits(live, now)
        return live

    async def _read_visits(self, live: LivePool, now: float) -> None:
        """The visits holding this pool's numbers (live or in grace) that memory lacks."""
        missing = [
            lease.session_id
            for number in live.numbers.numbers
            if (lease := live.numbers.holder(number, now)) is not None
            and lease.session_id not in self._visits
        ]
        for record in (await session_store.of_ids(self.db, None, missing)).values():
            self._visits[record.id] = Visit(record)

    # -- what other nodes did ---------------------------------------------------------------

    def on_lease(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        """A LISTEN callback: a lease row changed (this node's own changes come back too)."""
        self._apply(LeaseRow.from_notification(payload))

    def on_session(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        """A LISTEN callback: a session's attribution changed, or it was erased: memory's copy
        is stale (a call re-reads it)."""
        self._visits.pop(uuid.UUID(payload), None)

    def _apply(self, row: LeaseRow) -> None:
        if (heard := self._heard_while_reloading.get(row.pool_id)) is not None:
            heard.append(row)  # the pool being read may have read the row before this change
        live = self._by_number.get(row.number)
        if live is None or live.pool.id != row.pool_id:
            return  # a pool this node reloads anyway (its pool_changed NOTIFY follows)
        now = self.clock()
        lease = _lease(row)
        if not live.numbers.apply(row.number, lease, row.version, now) or lease is None:
            return
        visit = self._visits.get(lease.session_id)
        if visit is not None:
            visit.record.number = lease.number
            visit.record.lease_expires_at = _wall(lease.expires_at)

    # -- the swap script's side ---------------------------------------------------------------

    def pool_by_key(self, public_key: str) -> LivePool | None:
        return self._by_key.get(public_key)

    async def start(
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
        number (leased, or the pool's default when exhausted). One transaction, so the next
        request may reach any node."""
        now = self.clock()
        pool = live.pool
        origin = origin_from_page(page_url, referrer, pool.allowed_origins)
        view = {
            "url": origin.landing_page,  # the page without its query (one string for both)
            "title": (title or "")[:200] or None,
            "at": _stamp(now),
        }
        page = _PageView(visitor_id, origin, view, user_agent, ip, now)
        if not self._continues(pool, visitor_id, now):
            started = await self._new_visits.submit(live, page)
            if started is not None:
                record, taken = started
                return self._finish(live, record, taken, taken.row if taken else None, now)
        # It continues a visit (or its pool ran out under reuse_oldest): on its own.
        return await _undeadlocked(lambda: self._view(live, page))

    def _continues(self, pool: Pool, visitor_id: str | None, now: float) -> bool:
        """Whether memory says this page view continues a visit: then it goes its own way at
        once rather than through a batch that would find the same (its transaction reads
        the visit again, locked, and decides)."""
        session_id = self._by_visitor.get((pool.id, visitor_id)) if visitor_id else None
        visit = self._visits.get(session_id) if session_id else None
        return visit is not None and (
            now - visit.record.last_seen_at.timestamp() <= pool.lease_hold_seconds
        )

    async def _view(self, live: LivePool, page: _PageView) -> tuple[Visit, str | None]:
        pool = live.pool
        visitor_id, origin, view, now = page.visitor_id, page.origin, page.view, page.now
        async with self.db.acquire() as db, db.transaction():
            previous = None
            if visitor_id:
                previous = await session_store.latest_of_visitor(
                    db, pool.client_id, pool.id, visitor_id
                )
            idle = now - previous.last_seen_at.timestamp() if previous else None
            if previous is not None and idle is not None and idle <= pool.lease_hold_seconds:
                record = previous
                # This statement writes a later renewal than one waiting to be flushed (which,
                # were the lease taken again below, would revive the number it leaves).
                self._pending.pop(record.id, None)
                row = await lease_store.renew(
                    db,
                    client_id=pool.client_id,
                    session_id=record.id,
                    number=record.number,
                    now=now,
                    hold=float(pool.lease_hold_seconds),
                )
                taken = None
                if row is None:
                    # Its number was taken (reuse_oldest) or its hold ran out: lease one again.
                    taken = await self._take(db, live, record.id, visitor_id, now)
                    row = taken.row if taken else None
                if has_campaign(origin):
                    record.touches = {**record.touches, "last": _touch(origin, now)}
                    record.attribution = _credited(record.touches, pool.attribution_model)
                record.journey = [*record.journey, view][-JOURNEY_LENGTH:]
                record.ended = False
            else:
                record = _first_view(live, page, previous)
                taken = await self._take(db, live, record.id, visitor_id, now)
                row = taken.row if taken else None
            _leased(record, row, now)
            await session_store.save(db, record)
        return self._finish(live, record, taken, row, now)

    async def _start_visits(self, live: LivePool, pages: list[_PageView]) -> list[_Started | None]:
        """The group commit of page views that may start visits: one transaction, whose
        statements each serve the whole batch (the visitors' latest sessions, the leases, the
        session rows). None for a page view to serve on its own: it continues a visit (also
        one started earlier in this batch), or the pool ran out under ``reuse_oldest``, whose
        next lease is taken from a visit, maybe one of this batch."""
        pool = live.pool
        now = max(page.now for page in pages)
        async with self.db.acquire() as db, db.transaction():
            visitors = {page.visitor_id for page in pages if page.visitor_id}
            latest = await session_store.latest_of_visitors(
                db, pool.client_id, pool.id, list(visitors)
            )
            records: list[SessionRecord | None] = []
            starting: set[str] = set()
            for page in pages:
                previous = latest.get(page.visitor_id) if page.visitor_id else None
                if page.visitor_id in starting or (
                    previous is not None
                    and page.now - previous.last_seen_at.timestamp() <= pool.lease_hold_seconds
                ):
                    records.append(None)
                    continue
                if page.visitor_id:
                    starting.add(page.visitor_id)
                records.append(_first_view(live, page, previous))
            new = [record for record in records if record is not None]
            takes = await lease_store.take_many(
                db,
                pool_id=pool.id,
                holders=[(record.id, record.visitor_id) for record in new],
                now=now,
                hold=float(pool.lease_hold_seconds),
                grace=float(pool.grace_seconds),
                policy=pool.exhaustion_policy,
            )
            taken_by = dict(zip((record.id for record in new), takes, strict=True))
            started: list[_Started | None] = []
            for record in records:
                taken = taken_by.get(record.id) if record is not None else None
                if record is None or (taken is None and pool.exhaustion_policy == "reuse_oldest"):
                    started.append(None)
                    continue
                _leased(record, taken.row if taken else None, record.last_seen_at.timestamp())
                started.append((record, taken))
            await session_store.save_many(db, [s[0] for s in started if s is not None])
        return started

    def _finish(
        self,
        live: LivePool,
        record: SessionRecord,
        taken: lease_store.Taken | None,
        row: LeaseRow | None,
        now: float,
    ) -> tuple[Visit, str | None]:
        """A page view written: the index, the exhaustion counts and memory's visit follow."""
        if row is not None:
            live.numbers.apply(row.number, _lease(row), row.version, now)
        self._note(live, taken, row, now)
        visit = Visit(record)
        self._visits[record.id] = visit
        if record.visitor_id:
            self._by_visitor[(record.pool_id, record.visitor_id)] = record.id
        return visit, record.number or live.default_number

    async def _take(
        self,
        db: asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        live: LivePool,
        session_id: uuid.UUID,
        visitor_id: str | None,
        now: float,
    ) -> lease_store.Taken | None:
        return await lease_store.take(
            db,
            pool_id=live.pool.id,
            session_id=session_id,
            visitor_id=visitor_id,
            now=now,
            hold=float(live.pool.lease_hold_seconds),
            grace=float(live.pool.grace_seconds),
            policy=live.pool.exhaustion_policy,
        )

    def _note(
        self, live: LivePool, taken: lease_store.Taken | None, row: LeaseRow | None, now: float
    ) -> None:
        """Count an exhaustion this request met: a visit shown the default number, a number
        reused in its grace, or a lease taken from the visit idle longest."""
        if row is None:
            live.numbers.note_exhausted(now, wants_number=True)
        elif taken is not None and taken.exhausted:
            live.numbers.note_exhausted(now, wants_number=taken.revoked is not None)
            revoked = self._visits.get(taken.revoked) if taken.revoked else None
            if revoked is not None:
                revoked.record.lease_expires_at = _wall(now)

    def known(self, session_id: uuid.UUID) -> Visit | None:
        """A session in this node's memory, or None (``visit`` then looks in the database)."""
        return self._visits.get(session_id)

    async def visit(self, session_id: uuid.UUID) -> Visit | None:
        """A session, from memory or (made on another node, or forgotten here) the database."""
        visit = self._visits.get(session_id)
        if visit is None:
            record = await session_store.get(self.db, session_id)
            if record is None:
                return None
            visit = self._visits[session_id] = Visit(record)
        return visit

    async def heartbeat(self, session_id: uuid.UUID) -> Visit | None:
        """The page is still open: its lease lives another hold."""
        return await self._seen(session_id, ended=False)

    async def end(self, session_id: uuid.UUID) -> Visit | None:
        """The page was closed: the hold starts now (a call may still follow the visit)."""
        return await self._seen(session_id, ended=True)

    async def _seen(self, session_id: uuid.UUID, *, ended: bool) -> Visit | None:
        # From memory without awaiting ``visit`` (the swap script's every heartbeat).
        visit = self.known(session_id) or await self.visit(session_id)
        live = self.pools.get(visit.record.pool_id) if visit else None
        if visit is None or live is None:
            return None
        now = self.clock()
        record = visit.record
        hold = float(live.pool.lease_hold_seconds)
        lease = live.numbers.extend(session_id, now, now + hold, ended=ended)
        if lease is not None and lease.number == record.number:
            # Live in the index: answered from memory, written with the next flush.
            self._pending[session_id] = lease_store.Renewal(
                lease.number, record.client_id, session_id, now, lease.expires_at, ended
            )
            record.lease_expires_at = _wall(lease.expires_at)
            self._flush_soon()
        else:
            # Over (or unknown here): the database says whether it still holds its number.
            with contextlib.suppress(*OUTAGE_ERRORS):
                row = await _undeadlocked(
                    lambda: lease_store.renew(
                        self.db,
                        client_id=record.client_id,
                        session_id=record.id,
                        number=record.number,
                        now=now,
                        hold=hold,
                        ended=ended,
                    )
                )
                if row is not None:
                    live.numbers.apply(row.number, _lease(row), row.version, now)
                    record.lease_expires_at = row.expires_at
        record.last_seen_at = _wall(now)
        record.ended = ended
        return visit

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(lease_store.FLUSH_SECONDS)
        try:
            await self.flush()
        except OUTAGE_ERRORS:
            pass  # still away: ``run`` tries again
        except asyncpg.DeadlockDetectedError:
            # Undone every try (page views of these visits raced it): the next flush, soon.
            self._flusher = None
            self._flush_soon()

    @property
    def live(self) -> int:
        """Sessions held in memory (with a lease, or within their pool's grace)."""
        return len(self._visits)

    def stats(self, pool_id: uuid.UUID) -> PoolStats | None:
        live = self.pools.get(pool_id)
        return live.numbers.stats(self.clock()) if live else None

    # -- the carrier's side ---------------------------------------------------------------------

    async def prepare_call(self, e164: str) -> None:
        """Before a call to ``e164`` is attributed: read its lease when the index cannot vouch
        for it (not loaded, or LISTEN was lost), and the visit holding it when memory lacks
        it (made on another node). With the database away, memory answers as it stands."""
        try:
            await asyncio.wait_for(self._vouch(e164), CALL_READ_TIMEOUT)
        except OUTAGE_ERRORS:
            log.warning("sessions: database away; call to %s attributed from memory", e164)

    async def _vouch(self, e164: str) -> None:
        live = self._by_number.get(e164)
        if live is None or not self.trusted:
            row = await lease_store.of_number(self.db, e164)
            if row is None:
                return
            if row.pool_id not in self.pools:
                await self.reload(row.pool_id, quiet=True)
            self._apply(row)
            live = self._by_number.get(e164)
            if live is None:
                return
        lease = live.numbers.holder(e164, self.clock())
        if lease is not None:
            await self.visit(lease.session_id)

    def attribute(self, e164: str) -> Attribution | None:
        """The visit a call to ``e164`` belongs to; None when it is not a pool number."""
        live = self._by_number.get(e164)
        if live is None:
            return None
        lease = live.numbers.holder(e164, self.clock())
        visit = self._visits.get(lease.session_id) if lease else None
        if visit is None:
            return Attribution(None, {"source": live.pool.default_source})
        return Attribution(
            visit.record.id, dict(visit.record.attribution), list(visit.record.journey)
        )

    # -- housekeeping ---------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write the renewals served from memory, in one statement; how many stood (a session
        whose number another node took meanwhile, under ``reuse_oldest`` or while this node
        could not write, loses it here too)."""
        batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            renewals = list(batch.values())
            rows = await _undeadlocked(lambda: lease_store.renew_many(self.db, renewals))
        except BaseException:
            self._pending = {**batch, **self._pending}  # newer renewals win
            raise
        for row in rows:
            self._apply(row)
        renewed = {row.session_id for row in rows}
        for session_id, renewal in batch.items():
            if session_id not in renewed:
                current = await lease_store.of_number(self.db, renewal.number)
                if current is not None:
                    self._apply(current)
        return len(rows)

    async def stop(self, within: float = STOP_FLUSH_SECONDS) -> int:
        """Write the renewals still held, ``within`` seconds at most: the pages were told
        their leases run another hold, and the next start, or another node, only knows what
        PostgreSQL says. Call it once no request can renew any more and ``run`` is over,
        before ``db`` closes. How many were not written (they are logged)."""
        if self._flusher is not None:
            # Its batch, if it was being written, goes back to ``_pending`` (see ``flush``).
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            async with asyncio.timeout(within):
                await self.flush()
        except _STOP_FLUSH_ERRORS as exc:
            log.warning(
                "sessions: %d lease renewal(s) not written at stop (%s); those leases end "
                "sooner in the database than their pages were told",
                len(self._pending),
                type(exc).__name__,
            )
        return len(self._pending)

    async def run(self, interval: float = 1.0) -> None:
        """Every ``interval`` seconds: write what was served from memory and is still waiting
        (the database was away); every minute, drop
        visits whose lease and grace are over. Until cancelled."""
        rounds = 0
        while True:
            await asyncio.sleep(interval)
            rounds += 1
            if self._pending:
                with contextlib.suppress(*OUTAGE_ERRORS):  # still away: the next round
                    await self.flush()
            if rounds % 60 == 0:
                self.forget_expired()

    def forget_expired(self) -> None:
        """Drop visits whose lease (and grace) are over from memory; they stay in PostgreSQL."""
        now = self.clock()
        for session_id, visit in list(self._visits.items()):
            live = self.pools.get(visit.record.pool_id)
            grace = live.pool.grace_seconds if live else 0
            expires = visit.record.lease_expires_at or visit.record.last_seen_at
            if expires + timedelta(seconds=grace) < _wall(now) and session_id not in self._pending:
                del self._visits[session_id]
        self._forget_visitors()

    def _forget_visitors(self) -> None:
        """Drop the visitor ids whose latest visit is no longer in memory."""
        self._by_visitor = {
            key: session_id
            for key, session_id in self._by_visitor.items()
            if session_id in self._visits
        }

    # -- erasure ----------------------------------------------------------------------------

    def forget(self, session_ids: Collection[uuid.UUID]) -> None:
        """Drop these visits from memory and from the renewals to write, so an erased visit is
        neither written back nor used to attribute a call.

        Called by an erasure or the retention purge (``privacy.erasure.LiveSessions``), which
        delete the rows themselves; deleting a session frees its number in the database at
        once (migration 0013's trigger), and every node hears of it.
        """
        for session_id in session_ids:
            self._pending.pop(session_id, None)
            visit = self._visits.pop(session_id, None)
            live = self.pools.get(visit.record.pool_id) if visit else None
            if live is not None:
                live.numbers.forget(session_id)
        self._forget_visitors()  # an erased visit's visitor id is not kept either


async def _undeadlocked(work: Callable[[], Awaitable[T]]) -> T:
    """``work``, again when PostgreSQL undid it to break a deadlock: a page view of a visit
    locks its session, then its number; its heartbeat (or a flush of renewals) the other way
    round.
    Nothing of an undone attempt was written."""
    attempt = 1
    while True:
        try:
            return await work()
        except asyncpg.DeadlockDetectedError:
            if attempt == TRANSACTION_TRIES:
                raise
            attempt += 1


def _lease(row: LeaseRow) -> Lease | None:
    """The holder a row names, if it names one."""
    if row.session_id is None or row.expires_at is None:
        return None
    leased = row.leased_at or row.expires_at
    seen = row.last_seen_at or leased
    return Lease(
        row.number,
        row.session_id,
        row.visitor_id,
        leased.timestamp(),
        seen.timestamp(),
        row.expires_at.timestamp(),
        row.ended,
        row.version,
    )


@dataclass(frozen=True, slots=True)
class _PageView:
    """A swap-script page view, as it reached this node."""

    visitor_id: str | None
    origin: VisitOrigin
    view: dict[str, Any]
    """Its entry in the visit's journey."""
    user_agent: str | None
    ip: str | None
    now: float


def _first_view(live: LivePool, page: _PageView, previous: SessionRecord | None) -> SessionRecord:
    """A new visit's record, with no number yet; ``previous`` is the visitor's last visit."""
    record = _new_record(live, new_id(), page.visitor_id, page.origin, page.now)
    record.journey = [page.view]
    record.user_agent = (page.user_agent or "")[:500] or None
    record.ip_network = truncate_ip(page.ip)
    if previous is not None:  # a return visit: the visitor's first touch stays
        entry = record.touches["first"]
        last = previous.touches.get("last", entry)
        record.touches = {
            "first": previous.touches.get("first", entry),
            "last": last if _is_direct(entry) else entry,
        }
        record.attribution = _credited(record.touches, live.pool.attribution_model)
    return record


def _leased(record: SessionRecord, row: LeaseRow | None, now: float) -> None:
    """The page view's record says what it was leased (nothing: its old lease ends now)."""
    record.last_seen_at = _wall(now)
    record.number = row.number if row else None
    if row is not None:
        record.lease_expires_at = row.expires_at
    elif record.lease_expires_at is not None:
        record.lease_expires_at = min(record.lease_expires_at, _wall(now))


def _new_record(
    live: LivePool,
    session_id: uuid.UUID,
    visitor_id: str | None,
    origin: VisitOrigin,
    now: float,
) -> SessionRecord:
    entry = _touch(origin, now)
    touches = {"first": entry, "last": entry}
    return SessionRecord(
        id=session_id,
        client_id=live.pool.client_id,
        pool_id=live.pool.id,
        visitor_id=visitor_id,
        number=None,
        attribution=_credited(touches, live.pool.attribution_model),
        user_agent=None,
        ip_network=None,
        created_at=_wall(now),
        last_seen_at=_wall(now),
        lease_expires_at=None,
        ended=False,
        touches=touches,
    )
