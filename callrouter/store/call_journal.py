"""The call journal: makes call events durable in order, without making SIP wait on the database.

The B2BUA calls ``record()`` (never blocks). A spooler task appends events to the spool on
local disk (store/spool.py) once per flush interval, in one write and one fsync, so a crash
loses at most the events of the last interval; a writer task applies spooled events to
PostgreSQL in batches, each batch in one transaction and one statement per table
(store/call_rows.py), with the effect of the events applied in the order they were recorded. A
database outage delays writes, it does not lose them, and it does not hold up calls: the spool
keeps them (across a crash or restart too) and the batch is retried with backoff until it
lands. Every event's SQL is idempotent (keyed by call id and attempt number), so an event
applied again after a crash changes nothing: each lands exactly once. An event the
database refuses as data (a bug, not an outage) is logged and skipped so it cannot block every
later call. Such a log line names the event's type, its call id and the error's class,
SQLSTATE and constraint, never the event's values or the error's message (which quotes them: a
caller's number). ``flushed()`` lets a caller wait until what it recorded is in the database
(the B2BUA announces a finished call once its record is there).

Webhook events about a call (``WebhookRaised``) ride the journal like the call's own events:
spooled in the same write and fsync, stored in the same transaction as the rows they report
on, with delivery ids derived from the event's id, so a replay queues each once. A finished
recording (``RecordingFinished``) rides it too: its row and its recording.ready event are
stored after the call's row, in the order recorded, idempotently by recording id.

When the spool cannot take a batch (``spool_max_bytes`` reached, or the disk full), the batch
is kept in memory only: logged once per run of failures and counted in ``unspooled``. Held so,
events are written as soon as the database answers; with the database away too they pile up,
and a crash would lose every call they record. Later batches are held behind them, never
spooled ahead (a replay would apply them out of order): on each flush, and every
``respool_interval`` when nothing is recorded, the spool is asked whether it has room for the
held events (a cheap check), and if so they are written to it first, then the new batch, in
one write, under the next sequence numbers. Past ``max_held`` held events ``refusing_calls``
turns true (the front door answers new INVITEs 503 so that carriers send them to a node that
can record them, and /v1/ready says the journal is down) until the database has taken enough
of them or the spool has taken them all: calls already up go on, and their events are still
kept, so memory grows only by what they add.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from itertools import chain, islice
from types import TracebackType

import asyncpg

from callrouter.call_events import (
    CallEvent,
    RecordingRefused,
)
from callrouter.store.availability import OUTAGE_ERRORS, DatabaseAvailability
from callrouter.store.call_rows import Written, write_batch
from callrouter.store.spool import EventSpool, Spooled, SpoolFull

log = logging.getLogger(__name__)

# What the database (or asyncpg, encoding an argument) refuses as data. asyncpg's client-side
# DataError, raised when a value cannot be encoded, is not exported: it is an InterfaceError
# (an outage above, retried for ever) and a ValueError, which is how it is caught here.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError)

_NOT_SPOOLED = 0
"""The sequence number of an event the spool could not take (disk full): it is kept in memory
only, and written without moving the spool's position."""


class CallJournal:
    """Ordered, spooled, batched, retried writes of call events.

    :param pool: where to write.
    :param spool: the events on local disk; opened on entry, the events the database does not
        have yet (left by a crash or an outage) are written first. None keeps events in
        memory only until written (tests and short-lived tools, whose calls a crash ends).
    :param availability: told what each write saw of the database.
    :param node: the cluster node whose calls these are (each call row names it).
    :param max_batch: events per transaction.
    :param flush_interval: seconds the spooler gathers events after the first one arrives,
        then spools them in one write and one fsync (the bound on what a crash loses). A
        thread hand-off, an fsync and a transaction per event or two were most of the
        journal's cost at 100 calls/s; 0 spools whatever has arrived at once (tests).
    :param backoff: seconds to wait after the n-th consecutive failed attempt (n from 1).
    :param webhooks_queued: called after a batch that queued webhook deliveries is committed
        (it wakes the webhook sender).
    :param recordings_written: called after a batch that made recording rows, or queued the
        files of erased calls for shredding, is committed (the recordings service logs each
        ready recording and shreds those files).
    :param max_held: events held in memory only (the spool could not take them, the database
        does not have them yet) at which ``refusing_calls`` turns true; 0: never.
    :param respool_interval: seconds between offers of the held events to the spool when no
        new event comes, and after a write of them that failed though the spool said it had
        room.
    :param note_every: seconds between two notes of how far the database has got (the
        ``applied`` file, and deleting the segments it has whole): a kill replays at most
        this much more, which changes nothing. A note per batch (20 a second under load, a
        file written and renamed each) was a tenth of serve's active samples in py-spy.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        spool: EventSpool | None = None,
        *,
        availability: DatabaseAvailability | None = None,
        node: str | None = None,
        max_batch: int = 500,
        flush_interval: float = 0.05,
        backoff: Callable[[int], float] = lambda n: min(2.0, 0.1 * 2**n),
        webhooks_queued: Callable[[], None] = lambda: None,
        recordings_written: Callable[[Written], None] = lambda _: None,
        max_held: int = 0,
        respool_interval: float = 1.0,
        note_every: float = 1.0,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._availability = availability
        self._node = node
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._backoff = backoff
        self._webhooks_queued = webhooks_queued
        self._recordings_written = recordings_written
        self._max_held = max_held
        self._respool_interval = respool_interval
        self._respool_at = 0.0
        self._note_every = note_every
        self._noted_at = -note_every
        self._unnoted = 0
        """The last event written to the database whose position the spool has not noted."""
        self._encoded_bytes = 0
        self._encoded_events = 0
        self._held = 0
        self._unspooled: list[CallEvent] = []
        self._pending: deque[Spooled] = deque()
        self._recorded = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._spool_wakeup = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._spooler: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._spool_failing = False
        self._position_failing = False
        self.replayed = 0
        """Events found in the spool at start that the database did not have."""
        self.unspooled = 0
        """Events the spool could not take (full, or the disk full) since start: held in
        memory only, so a crash before the database has them loses them (a metric)."""

    def record(self, event: CallEvent) -> None:
        """Queue an event; it will be written after every event recorded before it."""
        self._unspooled.append(event)
        self._recorded += 1
        self._spool_wakeup.set()

    async def flushed(self) -> None:
        """Wait until every event recorded so far is in the database."""
        if self._written >= self._recorded:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._recorded, future))
        await future

    def lag(self, now: datetime) -> float:
        """Seconds the oldest unwritten event has waited (a metric: 0 when nothing waits)."""
        # Oldest first: spooled events wait to be written, unspooled ones to be spooled.
        # RecordingRefused carries no time; it is queued right after an event that does.
        waiting = chain((spooled.event for spooled in self._pending), self._unspooled)
        at = next((e.at for e in waiting if not isinstance(e, RecordingRefused)), None)
        return 0.0 if at is None else max(0.0, (now - at).total_seconds())

    @property
    def held(self) -> int:
        """Events in memory only: refused by the spool, not yet in the database (a metric)."""
        return self._held

    @property
    def refusing_calls(self) -> bool:
        """Whether new calls should be refused: ``max_held`` events are at risk already, and
        the spool takes none."""
        return self._spool_failing and 0 < self._max_held <= self._held

    @property
    def backlog(self) -> int:
        """Events recorded but not yet written (a metric: it grows during an outage)."""
        return len(self._unspooled) + len(self._pending)

    async def __aenter__(self) -> CallJournal:
        if self._spool is not None:
            missing = await asyncio.get_running_loop().run_in_executor(None, self._spool.open)
            self._pending.extend(missing)
            self._recorded += len(missing)
            self.replayed = len(missing)
        self._spooler = asyncio.create_task(self._spool_run(), name="call-journal-spool")
        # At shutdown the writer waits for the spooler's last batch: its end wakes the writer.
        self._spooler.add_done_callback(lambda _task: self._wakeup.set())
        self._task = asyncio.create_task(self._run(), name="call-journal")
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        """Spool what is recorded, write what is pending (bounded), then stop. What the
        database does not take in time stays in the spool for the next start."""
        self._closing = True
        self._spool_wakeup.set()
        self._wakeup.set()
        for task in (self._spooler, self._task):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=30)
            except TimeoutError:
                task.cancel()
        if self.backlog:
            log.warning(
                "call journal: %d event(s) not in the database at shutdown; the spool keeps "
                "them for the next start",
                self.backlog,
            )
        if self._spool is not None:
            if self._unnoted:
                await self._note_applied(asyncio.get_running_loop())
            self._spool.close()

    async def _spool_run(self) -> None:
        loop = asyncio.get_running_loop()
        tried_at_close = False
        while True:
            if not self._unspooled:
                if self._closing:
                    if self._held and not tried_at_close:
                        tried_at_close = True  # the database may not take them in time
                        await self._spool_batch(loop, [])
                        continue
                    return
                if not self._held:
                    await self._spool_wakeup.wait()
                    self._spool_wakeup.clear()
                    continue
                # Held events are offered to the spool again every respool_interval even when
                # no call records anything: a node refusing calls may have none up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._spool_wakeup.wait(), self._respool_interval)
                self._spool_wakeup.clear()
                if not self._unspooled and self._held:
                    await self._spool_batch(loop, [])
                continue
            if self._flush_interval > 0 and not self._closing:
                await asyncio.sleep(self._flush_interval)
            batch, self._unspooled = self._unspooled, []
            if self._spool is None:
                self._pending.extend(Spooled(_NOT_SPOOLED, event) for event in batch)
                self._wakeup.set()
                continue
            await self._spool_batch(loop, batch)

    async def _spool_batch(self, loop: asyncio.AbstractEventLoop, batch: list[CallEvent]) -> None:
        """Spool ``batch`` behind the events held in memory, or hold it too.

        Held events are always the newest in ``_pending`` (a suffix): a batch is only spooled
        after them, in the same write, so sequence numbers keep the order the events were
        recorded in and a replay after a crash applies them in that order. The spool is asked
        first whether it has room for them all (cheap); encoding them is not, so after a
        write that failed anyway they wait ``respool_interval`` before the next try.
        """
        assert self._spool is not None
        spool = self._spool
        refusing = self.refusing_calls
        if self._held and (
            loop.time() < self._respool_at
            or not await loop.run_in_executor(
                None, spool.has_room, (self._held + len(batch)) * self._event_bytes()
            )
        ):
            self._hold(batch, None)
        else:
            await self._write_to_spool(loop, spool, batch)
        self._say_refusal(refusing)
        self._wakeup.set()

    async def _write_to_spool(
        self, loop: asyncio.AbstractEventLoop, spool: EventSpool, batch: list[CallEvent]
    ) -> None:
        """Write the held events, then ``batch``, in one write; hold ``batch`` if it fails."""
        held = list(islice(self._pending, len(self._pending) - self._held, None))
        try:
            if held:
                # Large (up to max_held events and more): encoded off the loop so SIP is not
                # held up for the length of it.
                events = [s.event for s in held] + batch
                encoded = await loop.run_in_executor(None, spool.encode, events)
            else:
                encoded = spool.encode(batch)
            self._encoded_bytes += len(encoded.data)
            self._encoded_events += len(encoded.spooled)
            spooled = await loop.run_in_executor(None, spool.write, encoded)
        except (SpoolFull, OSError) as exc:
            if held:
                self._respool_at = loop.time() + self._respool_interval
            self._hold(batch, exc)
            return
        if held:
            self._respooled(spooled[: len(held)])
            spooled = spooled[len(held) :]
        if self._spool_failing:
            log.warning(
                "call journal: spooling to disk again (%d call event(s) held in memory written "
                "to it first)",
                len(held),
            )
        self._spool_failing = False
        self._pending.extend(spooled)

    def _hold(self, batch: list[CallEvent], exc: Exception | None) -> None:
        """Keep ``batch`` in memory only, behind the events held already: ``exc`` is why the
        spool refused it, None when it was not offered (no room for the held events first)."""
        # Calls go on; these events reach the database, but would not survive a crash.
        if exc is not None and not self._spool_failing:
            log.error(
                "call journal: cannot spool events to disk (%s); they are held in memory only "
                "until the database has them or the spool has room again",
                exc,
            )
        self._spool_failing = True
        self.unspooled += len(batch)
        self._held += len(batch)
        self._pending.extend(Spooled(_NOT_SPOOLED, event) for event in batch)

    def _respooled(self, spooled: list[Spooled]) -> None:
        """The held events are on disk now as ``spooled``: those the database has not taken
        meanwhile (the writer takes from the front) are replaced by their spooled selves, so
        the writer notes their position once it has them."""
        left = self._held  # the writer may have taken some while the spool wrote
        for _ in range(left):
            self._pending.pop()
        self._pending.extend(spooled[len(spooled) - left :] if left else ())
        self._held = 0

    def _event_bytes(self) -> int:
        """Bytes an event takes in the spool, on average so far (held events were encoded once,
        when the spool refused them)."""
        return self._encoded_bytes // max(1, self._encoded_events) + 1

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing and (self._spooler is None or self._spooler.done()):
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch = [self._pending[i] for i in range(min(self._max_batch, len(self._pending)))]
            try:
                await self._write(batch)
            except OUTAGE_ERRORS as exc:
                failures += 1
                if self._availability is not None:
                    self._availability.report(False, type(exc).__name__)
                if failures == 1:
                    log.warning("call journal: database unavailable (%s); retrying", exc)
            except Exception:
                # The journal must outlive any error: a dead writer would lose every later call.
                failures += 1
                log.exception("call journal: unexpected error writing a batch; retrying")
            else:
                if failures and self._availability is not None:
                    self._availability.report(True)
                failures = 0
                # Popped, not the batch as sent: the spooler may have spooled held events of
                # it meanwhile, and their position on disk is what is noted.
                taken = [self._pending.popleft() for _ in batch]
                self._written += len(batch)
                self._release_waiters()
                if self._spool is not None:
                    refusing = self.refusing_calls
                    self._held -= sum(1 for s in taken if s.seq == _NOT_SPOOLED)
                    self._say_refusal(refusing)
                last = max(s.seq for s in taken)
                if self._spool is not None and last != _NOT_SPOOLED:
                    self._unnoted = last
                    if self._closing or loop.time() - self._noted_at >= self._note_every:
                        await self._note_applied(loop)
                continue
            if self._closing and failures > 3:
                return
            await asyncio.sleep(self._backoff(failures))

    def _say_refusal(self, refusing: bool) -> None:
        """Log when new calls start being refused, and when they are taken again, given
        whether they were refused before."""
        if self.refusing_calls and not refusing:
            log.error(
                "call journal: %d call event(s) held in memory only (the spool cannot take "
                "them and the database does not have them): new calls are refused until the "
                "database takes them",
                self._held,
            )
        elif refusing and not self.refusing_calls:
            log.warning(
                "call journal: new calls are taken again (%d call event(s) held in memory only)",
                self._held,
            )

    async def _note_applied(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._spool is not None
        self._noted_at = loop.time()
        try:
            await loop.run_in_executor(None, self._spool.applied, self._unnoted)
        except OSError as exc:
            # The database has the events; a full disk only means the next start replays
            # them, which changes nothing (every event's SQL is idempotent).
            if not self._position_failing:
                log.error("call journal: cannot note the spool's position (%s)", exc)
            self._position_failing = True
        else:
            self._position_failing = False
            self._unnoted = 0

    async def _write(self, batch: list[Spooled]) -> None:
        async with self._pool.acquire() as connection:
            try:
                async with connection.transaction():
                    written = await write_batch(
                        connection, [spooled.event for spooled in batch], self._node
                    )
            except _REFUSED:
                written = await self._write_one_by_one(connection, batch)
        if written.deliveries:
            self._webhooks_queued()
        if written.recordings or written.erased:
            self._recordings_written(written)

    async def _write_one_by_one(
        self, connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], batch: list[Spooled]
    ) -> Written:
        written = Written()
        for spooled in batch:
            event = spooled.event
            try:
                async with connection.transaction():
                    written.add(await write_batch(connection, [event], self._node))
            except _REFUSED as exc:
                log.error(
                    "call journal: dropped %s of call %s: %s (sqlstate %s, constraint %s)",
                    type(event).__name__,
                    event.call_id,
                    type(exc).__name__,
                    getattr(exc, "sqlstate", None),
                    getattr(exc, "constraint_name", None),
                )
        return written

    def _release_waiters(self) -> None:
        keep = []
        for target, future in self._waiters:
            if target <= self._written:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep
