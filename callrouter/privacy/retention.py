"""Retention: data past its period is removed the way an erasure removes it.

Two periods per client (``clients.recordings_retention_days`` and ``data_retention_days``;
NULL takes the ``[privacy]`` defaults): recordings older than the first are shredded; calls,
visits, form submissions and webhook deliveries older than the second are deleted, calls and
forms first added to the anonymous daily counts. A visit waits for its last form. Calls still
in progress are never touched.

``purge`` takes the time as an argument and reads no clock, so tests run it on a fake one;
``run_daily`` is the loop ``callrouter serve`` runs: at start, then every day at
``[privacy] purge_hour`` (UTC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from uuid import UUID

from callrouter.config import ConfigError, PrivacyConfig
from callrouter.privacy import audit
from callrouter.privacy.archive import RecordingArchive
from callrouter.privacy.erasure import LiveSessions, Removed, SubjectRows, remove_rows, shred
from callrouter.store import privacy as store
from callrouter.store.database import Executor

__all__ = [
    "ClientPurge",
    "PurgeReport",
    "RetentionDefaults",
    "next_purge_at",
    "purge",
    "run_daily",
]

log = logging.getLogger(__name__)

MAX_DAYS = 36500
BATCH = 500


@dataclass(frozen=True, slots=True)
class RetentionDefaults:
    """The configured periods, for clients that set none of their own."""

    recordings_days: int
    data_days: int

    @classmethod
    def from_config(cls, config: PrivacyConfig) -> RetentionDefaults:
        """The ``[privacy]`` section's periods, checked.

        :raises ConfigError: naming the setting that is out of range.
        """
        for name in ("recordings_retention_days", "data_retention_days"):
            days = getattr(config, name)
            if not 1 <= days <= MAX_DAYS:
                raise ConfigError(f"privacy.{name}: {days} is not between 1 and {MAX_DAYS} days")
        if not 0 <= config.purge_hour <= 23:
            raise ConfigError(f"privacy.purge_hour: {config.purge_hour} is not an hour (0-23)")
        return cls(config.recordings_retention_days, config.data_retention_days)


@dataclass(frozen=True, slots=True)
class ClientPurge:
    """What one client's purge removed (or, in a dry run, would remove)."""

    client_id: UUID
    removed: Removed
    recordings_before: datetime
    data_before: datetime


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """A purge's outcome for every client that had something past its period."""

    at: datetime
    dry_run: bool
    clients: tuple[ClientPurge, ...]
    shredding: str = "done"

    @property
    def total(self) -> Removed:
        total = Removed()
        for client in self.clients:
            total = total + client.removed
        return total

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in asdict(self.total).items())
        return f"retention: {verb} {counts} ({len(self.clients)} client(s))"


def _cutoffs(
    now: datetime, defaults: RetentionDefaults, own: store.ClientRetention
) -> tuple[datetime, datetime]:
    recordings = own.recordings_retention_days or defaults.recordings_days
    data = own.data_retention_days or defaults.data_days
    return now - timedelta(days=recordings), now - timedelta(days=data)


async def purge(
    database: Executor,
    now: datetime,
    defaults: RetentionDefaults,
    dry_run: bool,
    *,
    archive: RecordingArchive | None = None,
    live_sessions: LiveSessions | None = None,
    actor: str = audit.RETENTION,
    client_id: UUID | None = None,
) -> PurgeReport:
    """Remove (or, with ``dry_run``, count) everything past its retention period at ``now``.

    Works in batches, each in its own short transaction, so a large backlog never holds locks
    for long and an interruption keeps what was done.

    :param client_id: only this client (``callrouter purge --client``).
    """
    results: list[ClientPurge] = []
    for own in await store.retention_periods(database):
        if client_id is not None and own.client_id != client_id:
            continue
        recordings_before, data_before = _cutoffs(now, defaults, own)
        if dry_run:
            counted = await store.count_expired(
                database, own.client_id, recordings_before, data_before
            )
            removed = Removed(**counted)
        else:
            removed = await _purge_client(
                database,
                own.client_id,
                (recordings_before, data_before),
                live_sessions,
                _Audit(now, actor, own.client_id),
            )
        if removed != Removed():
            results.append(ClientPurge(own.client_id, removed, recordings_before, data_before))
    report = PurgeReport(now, dry_run, tuple(results))
    if not dry_run and report.total.recordings:
        report = PurgeReport(now, dry_run, report.clients, await shred(archive))
    return report


@dataclass(frozen=True, slots=True)
class _Audit:
    at: datetime
    actor: str
    client_id: UUID

    async def record(self, db: Executor, removed: Removed) -> None:
        await audit.record(
            db,
            at=self.at,
            actor=self.actor,
            action=audit.RETENTION_PURGE,
            counts=removed.counts(),
            client_id=self.client_id,
        )


async def _purge_client(
    database: Executor,
    client_id: UUID,
    cutoffs: tuple[datetime, datetime],
    live_sessions: LiveSessions | None,
    trail: _Audit,
) -> Removed:
    """One client's purge, batch by batch; each batch is audited in its own transaction, so
    every deletion that is committed is on record."""
    recordings_before, data_before = cutoffs
    removed = Removed()
    finders: list[tuple[Callable[..., Awaitable[list[UUID]]], datetime, str]] = [
        (store.expired_recordings, recordings_before, "recording_ids"),
        (store.expired_calls, data_before, "call_ids"),
        (store.expired_forms, data_before, "form_ids"),
        (store.expired_sessions, data_before, "session_ids"),
    ]
    for find, cutoff, kind in finders:
        while True:
            async with store.transaction(database) as connection:
                ids = await find(connection, client_id, cutoff, BATCH)
                if not ids:
                    break
                if kind == "session_ids" and live_sessions is not None:
                    live_sessions.forget(ids)
                batch = await remove_rows(connection, client_id, SubjectRows(**{kind: tuple(ids)}))
                await trail.record(connection, batch)
            removed = removed + batch
            if len(ids) < BATCH:
                break
    async with store.transaction(database) as connection:
        deliveries = await store.delete_expired_deliveries(connection, client_id, data_before)
        if deliveries:
            await trail.record(connection, Removed(webhook_deliveries=deliveries))
    return removed + Removed(webhook_deliveries=deliveries)


def next_purge_at(now: datetime, hour: int) -> datetime:
    """The next time the clock shows ``hour``:00 UTC after ``now``."""
    today = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)


async def run_daily(
    database: Executor,
    defaults: RetentionDefaults,
    *,
    hour: int,
    clock: Callable[[], datetime],
    announce: Callable[[str], None],
    archive: RecordingArchive | None = None,
    live_sessions: LiveSessions | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Purge at start, then every day at ``hour`` UTC, until cancelled.

    A failed purge is logged and tried again at the next run; it never stops the loop.

    :param clock: the current UTC time (``datetime.now(UTC)`` in ``serve``).
    :param announce: where each purge's summary goes (the operator's console).
    """
    while True:
        try:
            report = await purge(
                database, clock(), defaults, False, archive=archive, live_sessions=live_sessions
            )
        except Exception:
            log.exception("retention: purge failed; trying again at the next run")
        else:
            if report.clients:
                announce(report.summary())
        now = clock()
        await sleep((next_purge_at(now, hour) - now).total_seconds())
