"""Data subjects' rights as one service: file a request, carry it out, record the outcome.

The API and the CLI both go through ``PrivacyRights``, so a request made either way is
registered, carried out, audited and answered the same way:

- access: registered open; carried out by downloading the export (``export``);
- erasure: everything about the subject is removed (``erasure``), the receipt is the outcome;
- objection: the number goes on the suppression list (reason ``objection``);
- consent_withdrawal: the number goes on the list with reason ``recording_consent_withdrawn``;
- rectification: the corrections are applied (``rectification``).

A request filed with ``carry_out=False`` stays open (to check the requester's identity
first, say) and is carried out later with ``fulfil``, which must be given the same subject:
the register holds only its keyed hash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from callrouter.config import Config
from callrouter.numbering import NumberFormatError
from callrouter.privacy import audit, register
from callrouter.privacy.archive import RecordingArchive
from callrouter.privacy.erasure import LiveSessions, erase, find_subject_rows
from callrouter.privacy.export import Write, write_export
from callrouter.privacy.ledger import (
    LEDGER_KINDS,
    LedgerEntry,
    LedgerKind,
    RightsLedger,
    ledger_path,
)
from callrouter.privacy.rectification import Correction, rectify
from callrouter.privacy.register import RequestKind
from callrouter.privacy.retention import PurgeReport, RetentionDefaults, purge, run_daily
from callrouter.privacy.secret import load_secret, secret_path
from callrouter.privacy.subjects import Subject, SubjectHasher
from callrouter.privacy.suppression import CHANNEL, SuppressionList
from callrouter.store import privacy as store
from callrouter.store.database import Executor
from callrouter.store.notifications import Listens
from callrouter.store.privacy import PrivacyRequest

__all__ = ["PrivacyRights", "RequestRefused"]

log = logging.getLogger(__name__)

# A request's receipt date may be given (a letter that came last week), not invented ahead.
CLOCK_SKEW = timedelta(minutes=5)

OBJECTION_NOTICE = (
    "Calls from this number are still connected, but are no longer recorded, attributed to a "
    "website visit, or stored or sent (webhooks) with the number. Records made before the "
    "objection are kept: file an erasure request to remove them."
)
CONSENT_NOTICE = (
    "Calls from this number are still connected and attributed, but never recorded. "
    "Recordings made before are kept: file an erasure request to remove them."
)


class RequestRefused(Exception):
    """A request cannot be carried out as asked; names the field and says why.

    :param status: 422 for a field of the request, 409 for the request's state.
    """

    def __init__(self, field_name: str, reason: str, status: int = 422) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason
        self.status = status


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class PrivacyRights:
    """Privacy requests, the suppression list and retention, for the API, the CLI and serve.

    :param db: a pool (serve, the API) or a connection (the CLI).
    :param archive: the recordings service; without it, deleted recordings stay queued for
        shredding and an export of a subject with recordings is refused.
    :param live_sessions: the router's visits in memory, told to forget erased ones.
    :param clock: the current UTC time.
    """

    db: Executor
    hasher: SubjectHasher
    suppressions: SuppressionList
    defaults: RetentionDefaults
    purge_hour: int = 3
    archive: RecordingArchive | None = None
    live_sessions: LiveSessions | None = None
    clock: Callable[[], datetime] = field(default=_utc_now)
    ledger: RightsLedger | None = None
    """Where erasures and objections are also written, for a restore to repeat them."""

    @classmethod
    async def open(
        cls,
        db: Executor,
        config: Config,
        *,
        listener: Listens | None = None,
        archive: RecordingArchive | None = None,
        live_sessions: LiveSessions | None = None,
        say: Callable[[str], None] = log.info,
    ) -> PrivacyRights:
        """Load the secret (creating it on first use), check the periods, and, given a
        ``listener`` connection, load the suppression list and keep it fresh on it.

        :raises SecretFileError: the secret file is readable by others or malformed.
        :raises ConfigError: a retention setting is out of range.
        """
        defaults = RetentionDefaults.from_config(config.privacy)
        secret = await asyncio.to_thread(load_secret, secret_path(config))
        hasher = SubjectHasher(secret.value)
        suppressions = SuppressionList(hasher)
        rights = cls(
            db,
            hasher,
            suppressions,
            defaults,
            config.privacy.purge_hour,
            archive,
            live_sessions,
            ledger=RightsLedger(ledger_path(config)),
        )
        if secret.created:
            say(f"privacy: created the secret that keys subject hashes in {secret.path}")
            await audit.record(
                db, at=rights.clock(), actor=audit.SERVER, action=audit.SECRET_CREATED, counts={}
            )
        if listener is not None:
            # Listen first: a change made while the list loads is replayed, not lost.
            await listener.add_listener(CHANNEL, suppressions.on_notify)
            count = await suppressions.load(db)
            say(f"privacy: {count} suppression list entr{'y' if count == 1 else 'ies'} loaded")
        return rights

    # -- requests ---------------------------------------------------------------------------

    def subject_matches(self, request: PrivacyRequest, subject: Subject) -> bool:
        """Whether ``subject`` is the one the request was filed for."""
        return request.subject_kind == subject.kind and request.subject_hash == (
            self.hasher.digest(request.client_id, subject)
        )

    async def file(
        self,
        client_id: UUID,
        kind: RequestKind,
        subject: Subject,
        *,
        actor: str,
        received_at: datetime | None = None,
        carry_out: bool = True,
        corrections: Sequence[Correction] = (),
    ) -> PrivacyRequest:
        """Register a request and, unless ``carry_out`` is False or it is an access request
        (answered by its export), carry it out now.

        :raises RequestRefused: naming the field that does not fit the kind.
        """
        now = self.clock()
        received = received_at or now
        if received > now + CLOCK_SKEW:
            raise RequestRefused("received_at", "is in the future")
        self._check(kind, subject, corrections)
        request = await register.file_request(
            self.db, self.hasher, client_id, kind, subject, received_at=received, actor=actor
        )
        if carry_out and kind != "access":
            request = await self._carry_out(request, subject, corrections, actor)
        return request

    async def fulfil(
        self,
        request: PrivacyRequest,
        subject: Subject,
        *,
        actor: str,
        corrections: Sequence[Correction] = (),
    ) -> PrivacyRequest:
        """Carry out a request filed earlier without being carried out.

        :raises RequestRefused: 409 when it is done or an access request (use ``export``);
            422 when ``subject`` is not the request's subject.
        """
        if request.status != "open":
            raise RequestRefused("request", "is already done", 409)
        if request.kind == "access":
            raise RequestRefused("request", "an access request is answered by its export", 409)
        if not self.subject_matches(request, subject):
            raise RequestRefused("subject", "is not the subject of this request")
        self._check(request.kind, subject, corrections)
        return await self._carry_out(request, subject, corrections, actor)

    @staticmethod
    def _check(kind: str, subject: Subject, corrections: Sequence[Correction]) -> None:
        if kind in ("objection", "consent_withdrawal") and subject.kind != "phone":
            raise RequestRefused(
                "subject", "must be a phone number for an objection or a consent withdrawal"
            )
        if kind == "rectification" and not corrections:
            raise RequestRefused("corrections", "a rectification needs at least one correction")
        if kind != "rectification" and corrections:
            raise RequestRefused("corrections", "only a rectification has corrections")

    async def _carry_out(
        self,
        request: PrivacyRequest,
        subject: Subject,
        corrections: Sequence[Correction],
        actor: str,
    ) -> PrivacyRequest:
        now = self.clock()
        outcome: dict[str, Any]
        client_id = request.client_id
        if request.kind in LEDGER_KINDS:
            await self._keep(request.kind, client_id, subject, request.subject_hash, now)
        if request.kind == "erasure":
            receipt = await erase(
                self.db,
                self.hasher,
                client_id,
                subject,
                actor=actor,
                now=now,
                request_id=request.id,
                archive=self.archive,
                live_sessions=self.live_sessions,
            )
            outcome = receipt.outcome()
        elif request.kind == "rectification":
            counts = await rectify(
                self.db,
                self.hasher,
                client_id,
                subject,
                corrections,
                actor=actor,
                now=now,
                request_id=request.id,
            )
            outcome = {"corrected": counts}
        else:
            objection = request.kind == "objection"
            reason = "objection" if objection else "recording_consent_withdrawn"
            added = await store.add_suppression(
                self.db, client_id, request.subject_hash, reason, request.id
            )
            await audit.record(
                self.db,
                at=now,
                actor=actor,
                action=audit.OBJECTION if objection else audit.CONSENT_WITHDRAWN,
                counts={"suppressions": int(added)},
                client_id=client_id,
                subject=subject,
                hasher=self.hasher,
                request_id=request.id,
            )
            outcome = {
                "suppression": "added" if added else "already listed",
                "reason": reason,
                "notices": [OBJECTION_NOTICE if objection else CONSENT_NOTICE],
            }
        return await register.complete(self.db, request, outcome, self.clock())

    async def _keep(
        self,
        kind: LedgerKind,
        client_id: UUID,
        subject: Subject,
        subject_hash: bytes,
        now: datetime,
    ) -> None:
        """Write the ledger entry before the database changes (see ``privacy.ledger``)."""
        if self.ledger is None:
            return
        entry = LedgerEntry(
            now,
            client_id,
            kind,
            subject.kind,
            subject_hash if subject.kind == "phone" else None,
            subject.id if subject.kind != "phone" else None,
        )
        try:
            await asyncio.to_thread(self.ledger.append, entry)
        except OSError as exc:
            # The request is the duty now; the ledger only guards a later restore.
            log.error(
                "privacy: the rights ledger %s could not be written (%s): a restore from a "
                "backup older than now would not repeat this %s",
                self.ledger.path,
                exc.strerror,
                kind,
            )

    # -- after a restore ------------------------------------------------------------------------

    async def replay(self, since: datetime, actor: str = "restore") -> dict[str, int]:
        """Carry out again every ledger entry written at or after ``since`` (the backup's
        time), in order, on the restored database. Counts of what it did by kind.

        A phone number is found again through its keyed hash among the callers of the
        client's calls; a number that only a form mentioned is not found this way.
        """
        done = {"erasures": 0, "suppressions": 0, "not_found": 0}
        ledger = self.ledger
        if ledger is None:
            return done
        entries = await asyncio.to_thread(lambda: list(ledger.entries()))
        callers: dict[UUID, dict[bytes, Subject]] = {}
        for entry in entries:
            if entry.at < since:
                continue
            if entry.kind != "erasure":
                assert entry.subject_hash is not None  # objections are about numbers
                reason = "objection" if entry.kind == "objection" else "recording_consent_withdrawn"
                added = await store.add_suppression(
                    self.db, entry.client_id, entry.subject_hash, reason, None
                )
                done["suppressions"] += int(added)
                continue
            if entry.subject_id is not None:
                subject = (
                    Subject.call(entry.subject_id)
                    if entry.subject_kind == "call"
                    else Subject.session(entry.subject_id)
                )
            else:
                if entry.client_id not in callers:
                    callers[entry.client_id] = await self._callers_by_hash(entry.client_id)
                found = callers[entry.client_id].get(entry.subject_hash or b"")
                if found is None:
                    done["not_found"] += 1
                    continue
                subject = found
            receipt = await erase(
                self.db,
                self.hasher,
                entry.client_id,
                subject,
                actor=actor,
                now=self.clock(),
                archive=self.archive,
            )
            if any(receipt.removed.counts().values()):
                done["erasures"] += 1
        return done

    async def _callers_by_hash(self, client_id: UUID) -> dict[bytes, Subject]:
        found: dict[bytes, Subject] = {}
        for stored in await store.caller_numbers(self.db, client_id):
            try:
                subject = Subject.phone(stored)
            except NumberFormatError:
                continue  # withheld, or a spelling no phone subject can have
            found[self.hasher.digest(client_id, subject)] = subject
        return found

    # -- access -----------------------------------------------------------------------------

    async def export(
        self, request: PrivacyRequest, subject: Subject, write: Write, *, actor: str
    ) -> PrivacyRequest:
        """Stream the export of an access request's subject to ``write``, then mark the
        request done. An export may be downloaded again; each download is audited.

        :raises RequestRefused: 409 when the request is not an access request, 422 when
            ``subject`` is not its subject, 503 when there are recordings to export and no
            recordings archive here. Raised before the first byte is written.
        """
        if request.kind != "access":
            raise RequestRefused("request", "only an access request has an export", 409)
        if not self.subject_matches(request, subject):
            raise RequestRefused("subject", "is not the subject of this request")
        rows = await find_subject_rows(self.db, request.client_id, subject)
        if rows.recording_ids and self.archive is None:
            raise RequestRefused(
                "request", "recordings can only be exported where the recordings service runs", 503
            )
        now = self.clock()
        summary = await write_export(
            self.db,
            request.client_id,
            subject,
            rows,
            hasher=self.hasher,
            archive=self.archive,
            write=write,
            now=now,
            request_id=request.id,
        )
        await audit.record(
            self.db,
            at=now,
            actor=actor,
            action=audit.EXPORT,
            counts=summary.counts(),
            client_id=request.client_id,
            subject=subject,
            hasher=self.hasher,
            request_id=request.id,
        )
        if request.status == "open":
            return await register.complete(
                self.db, request, {"export": summary.counts()}, self.clock()
            )
        return request

    # -- retention --------------------------------------------------------------------------

    async def purge(
        self, *, dry_run: bool, actor: str = audit.RETENTION, client_id: UUID | None = None
    ) -> PurgeReport:
        """Remove (or count) what is past its retention period now."""
        return await purge(
            self.db,
            self.clock(),
            self.defaults,
            dry_run,
            archive=self.archive,
            live_sessions=self.live_sessions,
            actor=actor,
            client_id=client_id,
        )

    async def run_daily(self, announce: Callable[[str], None]) -> None:
        """The purge loop for ``serve``: at start, then daily at ``purge_hour`` UTC."""
        await run_daily(
            self.db,
            self.defaults,
            hour=self.purge_hour,
            clock=self.clock,
            announce=announce,
            archive=self.archive,
            live_sessions=self.live_sessions,
        )
