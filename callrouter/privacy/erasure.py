"""Erasure: everything held about a subject goes, except anonymous counts that keep reports true.

What a subject covers (``find_subject_rows``; the access export shows exactly the same rows):

- a phone number: the client's calls from it (in any spelling stored), the visits those calls
  were attributed to and every other visit of the same first-party visitor id, the forms of
  those visits and any form whose values or page mention the number;
- a call: that call, the visit it was attributed to and its forms;
- a session: that visit, its forms and the calls attributed to it;

and with the calls, their recordings. Removal (``remove_rows``) deletes webhook deliveries
about any of them, the recordings (crypto-shredding: the recordings service destroys each
wrapped data key and file, from the queue the rows' deletion fills in the same transaction),
the calls and forms (added first to ``call_aggregates``: counts per day and channel) and the
sessions. An erasure by phone number also takes the number off the suppression list: after
it, nothing marks the number, so its future calls are processed like anyone's; an objection
is the way to stop that, and the receipt says so.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

from callrouter.privacy import audit
from callrouter.privacy.archive import RecordingArchive
from callrouter.privacy.subjects import Subject, SubjectHasher, numbers_in_text, phone_formats
from callrouter.store import privacy as store
from callrouter.store.database import Executor

__all__ = [
    "ErasureReceipt",
    "LiveSessions",
    "Removed",
    "SubjectRows",
    "erase",
    "find_subject_rows",
    "remove_rows",
    "shred",
]

log = logging.getLogger(__name__)

SUPPRESSION_NOTICE_REMOVED = (
    "This erasure also removed the number from the suppression list. Nothing now marks it: "
    "calls from it may be recorded, attributed and stored again like any other caller's. "
    "If the caller does not want that, file an objection (kind objection) for the number: "
    "it keeps only a keyed hash of it, which is what stops future processing."
)
SUPPRESSION_NOTICE_NONE = (
    "An erasure keeps no trace of the number, not even on the suppression list: calls from "
    "it may be recorded, attributed and stored again like any other caller's. If the caller "
    "does not want that, file an objection (kind objection) for the number instead."
)


class LiveSessions(Protocol):
    """The router's visits in memory (``routing.sessions.Sessions``)."""

    def forget(self, session_ids: Collection[UUID]) -> None:
        """Drop these visits from memory and from the renewals waiting for the database, so
        an erased visit is neither written back nor used to attribute a call."""
        ...


@dataclass(frozen=True, slots=True)
class SubjectRows:
    """The ids of everything held about one subject."""

    call_ids: tuple[UUID, ...] = ()
    session_ids: tuple[UUID, ...] = ()
    form_ids: tuple[UUID, ...] = ()
    recording_ids: tuple[UUID, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.call_ids or self.session_ids or self.form_ids or self.recording_ids)


@dataclass(frozen=True, slots=True)
class Removed:
    """How many of each kind of item a removal deleted."""

    calls: int = 0
    recordings: int = 0
    sessions: int = 0
    forms: int = 0
    webhook_deliveries: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(
            *(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True))
        )

    def counts(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What one erasure removed. Repeating an erasure gives a receipt of zeros."""

    subject_kind: str
    removed: Removed
    suppressions_removed: tuple[str, ...] = ()
    """Reasons the number was on the suppression list for (objection, consent withdrawn)."""
    shredding: str = "done"
    """done: the recordings' keys and files are destroyed; queued: the recordings service will
    destroy them (it was unavailable here)."""
    notices: tuple[str, ...] = field(default=())

    def outcome(self) -> dict[str, object]:
        """The register's outcome and the API's receipt (counts and notices only)."""
        return {
            "receipt": self.removed.counts(),
            "suppressions_removed": list(self.suppressions_removed),
            "shredding": self.shredding,
            "notices": list(self.notices),
        }


def _unique(*groups: Collection[UUID]) -> tuple[UUID, ...]:
    return tuple(sorted({item for group in groups for item in group}))


async def find_subject_rows(db: Executor, client_id: UUID, subject: Subject) -> SubjectRows:
    """Every row of ``client_id`` that is about ``subject`` (see the module docstring)."""
    if subject.kind == "phone":
        formats = phone_formats(subject.value)
        calls = await store.calls_from(db, client_id, formats.spellings)
        call_ids = [row["id"] for row in calls]
        linked = [row["session_id"] for row in calls if row["session_id"] is not None]
        session_ids = await store.sessions_among(db, client_id, linked, same_visitor=True)
        mentioned = [
            form.id
            for form in await store.forms_with_digits(db, client_id, formats.national_significant)
            if any(
                subject.value in numbers_in_text(text, formats.region)
                for text in (*form.fields.values(), form.page or "")
            )
        ]
    elif subject.kind == "call":
        row = await store.call_session(db, client_id, subject.id)
        if row is None:
            return SubjectRows()
        call_ids = [row["id"]]
        linked = [row["session_id"]] if row["session_id"] is not None else []
        session_ids = await store.sessions_among(db, client_id, linked, same_visitor=False)
        mentioned = []
    else:
        session_ids = await store.sessions_among(db, client_id, [subject.id], same_visitor=False)
        # Calls keep their session id after the session itself has expired.
        call_ids = await store.calls_in_sessions(db, client_id, [subject.id])
        mentioned = []
    forms = await store.forms_in_sessions(db, client_id, session_ids)
    recordings = await store.recordings_of(db, client_id, call_ids)
    return SubjectRows(
        _unique(call_ids),
        _unique(session_ids),
        _unique(forms, mentioned),
        _unique([r.id for r in recordings]),
    )


async def remove_rows(db: Executor, client_id: UUID, rows: SubjectRows) -> Removed:
    """Delete the rows, keeping anonymous counts of the calls and forms. Run it inside a
    transaction: the recordings' shredding is queued by the same commit."""
    # A session's forms and a call's recordings go with it whatever the caller listed.
    form_ids = _unique(
        rows.form_ids, await store.forms_in_sessions(db, client_id, rows.session_ids)
    )
    recordings = await store.recordings_of(db, client_id, rows.call_ids)
    recording_ids = _unique(rows.recording_ids, [r.id for r in recordings])
    deliveries = await store.delete_deliveries_about(
        db,
        client_id,
        call_ids=rows.call_ids,
        session_ids=rows.session_ids,
        form_ids=form_ids,
        recording_ids=recording_ids,
    )
    recordings_deleted = await store.delete_recordings(db, client_id, recording_ids)
    calls = await store.delete_calls_into_counts(db, client_id, rows.call_ids)
    # Forms before their sessions: the cascade would delete them without counting them.
    forms = await store.delete_forms_into_counts(db, client_id, form_ids)
    sessions = await store.delete_sessions(db, client_id, rows.session_ids)
    return Removed(calls, recordings_deleted, sessions, forms, deliveries)


async def shred(archive: RecordingArchive | None) -> str:
    """Ask the recordings service to destroy what the last commit queued: done or queued."""
    if archive is None:
        return "queued"
    try:
        await archive.dispose_pending()
    except Exception:
        # Still queued in recording_disposals; the recordings service retries it.
        log.exception("privacy: shredding recordings failed; they stay queued")
        return "queued"
    return "done"


async def erase(
    db: Executor,
    hasher: SubjectHasher,
    client_id: UUID,
    subject: Subject,
    *,
    actor: str,
    now: datetime,
    request_id: UUID | None = None,
    archive: RecordingArchive | None = None,
    live_sessions: LiveSessions | None = None,
) -> ErasureReceipt:
    """Erase everything held about ``subject`` for ``client_id``, audit it, and shred the
    recordings. Idempotent: a second erasure finds nothing and says so."""
    async with store.transaction(db) as connection:
        rows = await find_subject_rows(connection, client_id, subject)
        if live_sessions is not None and rows.session_ids:
            live_sessions.forget(rows.session_ids)
        removed = await remove_rows(connection, client_id, rows)
        reasons: list[str] = []
        if subject.kind == "phone":
            reasons = await store.remove_suppressions(
                connection, client_id, hasher.digest(client_id, subject)
            )
        await audit.record(
            connection,
            at=now,
            actor=actor,
            action=audit.ERASURE,
            counts={**removed.counts(), "suppressions": len(reasons)},
            client_id=client_id,
            subject=subject,
            hasher=hasher,
            request_id=request_id,
        )
    if live_sessions is not None and rows.session_ids:
        # Again after the commit: a request served during the erasure may have read the visit
        # into memory again.
        live_sessions.forget(rows.session_ids)
    shredding = await shred(archive) if removed.recordings else "done"
    notices: tuple[str, ...] = ()
    if subject.kind == "phone":
        notices = (SUPPRESSION_NOTICE_REMOVED if reasons else SUPPRESSION_NOTICE_NONE,)
    return ErasureReceipt(subject.kind, removed, tuple(reasons), shredding, notices)
