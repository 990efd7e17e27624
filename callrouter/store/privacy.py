"""Privacy rights in plain SQL: a subject's rows, their removal into anonymous counts, the
suppression list, the request register, the audit log and retention periods.

Every query of client data carries ``client_id``; the few that read across clients say so in
their name (``all_suppressions``, ``retention_periods``). Subjects appear here only as keyed
hashes (``subject_hash``), except the caller number and form fields being searched for or
corrected, which are parameters, never stored by this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from callrouter.store.calls import CALL_COLUMNS, Call
from callrouter.store.database import Executor
from callrouter.store.ids import new_id
from callrouter.store.patch import set_clause
from callrouter.store.sessions import SESSION_COLUMNS, SessionRecord
from callrouter.store.tenant_table import TenantTable

# -- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrivacyRequest:
    """One request of a data subject in the register."""

    id: UUID
    client_id: UUID
    kind: str
    subject_kind: str
    subject_hash: bytes
    received_at: datetime
    due_at: datetime
    status: str
    outcome: dict[str, Any] | None
    completed_at: datetime | None
    requested_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Suppression:
    """A number on the suppression list, as its keyed hash."""

    id: UUID
    client_id: UUID
    subject_hash: bytes
    reason: str
    request_id: UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audited operation on personal data (never the data itself)."""

    id: UUID
    at: datetime
    actor: str
    action: str
    client_id: UUID | None
    subject_kind: str | None
    subject_hash: bytes | None
    request_id: UUID | None
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class FormRow:
    """A form submission as stored."""

    id: UUID
    session_id: UUID
    form: str
    fields: dict[str, str]
    attribution: dict[str, Any]
    page: str | None
    submitted_at: datetime


@dataclass(frozen=True, slots=True)
class RecordingRow:
    """What export and erasure need of a recording (the audio itself is the archive's)."""

    id: UUID
    call_id: UUID
    format: str
    path: str
    bytes: int
    duration_seconds: float
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class ClientRetention:
    """A client's own retention periods in days; None: the configured default."""

    client_id: UUID
    recordings_retention_days: int | None
    data_retention_days: int | None


REQUEST_COLUMNS = (
    "id, client_id, kind, subject_kind, subject_hash, received_at, due_at, status, outcome, "
    "completed_at, requested_by, created_at"
)
SUPPRESSIONS = TenantTable(
    "suppressions",
    "id, client_id, subject_hash, reason, request_id, created_at",
    Suppression,
    updatable=frozenset(),
    filterable=frozenset({"client_id", "reason"}),
)
AUDIT = TenantTable(
    "privacy_audit",
    "id, at, actor, action, client_id, subject_kind, subject_hash, request_id, counts",
    AuditRow,
    updatable=frozenset(),
    filterable=frozenset({"client_id", "action"}),
)
_SESSION_COLUMNS = SESSION_COLUMNS
_FORM_COLUMNS = "id, session_id, form, fields, attribution, page, submitted_at"
_RECORDING_COLUMNS = "id, call_id, format, path, bytes, duration_seconds, started_at, ended_at"
_RETENTION_COLUMNS = "id AS client_id, recordings_retention_days, data_retention_days"


def _ids(rows: Sequence[Any]) -> list[UUID]:
    return [row["id"] for row in rows]


@asynccontextmanager
async def transaction(db: Executor) -> AsyncIterator[Executor]:
    """One transaction on ``db``: a connection taken from a pool, or the connection given."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as connection, connection.transaction():
            yield connection
    else:
        async with db.transaction():
            yield db


# -- finding a subject's rows -----------------------------------------------------------------


async def calls_from(
    db: Executor, client_id: UUID, spellings: Sequence[str]
) -> list[asyncpg.Record]:
    """(id, session_id) of the client's calls whose caller number is one of ``spellings``."""
    return await db.fetch(
        "SELECT id, session_id FROM calls WHERE client_id = $1 AND caller_number = ANY($2) "
        "ORDER BY id",
        client_id,
        list(spellings),
    )


async def caller_numbers(db: Executor, client_id: UUID) -> list[str]:
    """Every caller number of the client's calls, as stored (for matching keyed hashes)."""
    rows = await db.fetch(
        "SELECT DISTINCT caller_number FROM calls WHERE client_id = $1 "
        "AND caller_number IS NOT NULL",
        client_id,
    )
    return [row["caller_number"] for row in rows]


async def call_session(db: Executor, client_id: UUID, call_id: UUID) -> asyncpg.Record | None:
    """(id, session_id) of one call, or None."""
    return await db.fetchrow(
        "SELECT id, session_id FROM calls WHERE client_id = $1 AND id = $2", client_id, call_id
    )


async def calls_in_sessions(
    db: Executor, client_id: UUID, session_ids: Sequence[UUID]
) -> list[UUID]:
    """Calls attributed to any of the sessions."""
    rows = await db.fetch(
        "SELECT id FROM calls WHERE client_id = $1 AND session_id = ANY($2::uuid[]) ORDER BY id",
        client_id,
        list(session_ids),
    )
    return _ids(rows)


async def sessions_among(
    db: Executor, client_id: UUID, session_ids: Sequence[UUID], *, same_visitor: bool
) -> list[UUID]:
    """Which of the ids are the client's sessions; with ``same_visitor``, also every other
    session of the same first-party visitor id (the same browser, on other visits)."""
    rows = await db.fetch(
        """WITH named AS (
               SELECT id, visitor_id FROM sessions
               WHERE client_id = $1 AND id = ANY($2::uuid[]))
           SELECT id FROM named
           UNION
           SELECT s.id FROM sessions s
           WHERE $3 AND s.client_id = $1
             AND s.visitor_id IN (SELECT visitor_id FROM named WHERE visitor_id IS NOT NULL)
           ORDER BY id""",
        client_id,
        list(session_ids),
        same_visitor,
    )
    return _ids(rows)


async def forms_in_sessions(
    db: Executor, client_id: UUID, session_ids: Sequence[UUID]
) -> list[UUID]:
    rows = await db.fetch(
        "SELECT id FROM forms WHERE client_id = $1 AND session_id = ANY($2::uuid[]) ORDER BY id",
        client_id,
        list(session_ids),
    )
    return _ids(rows)


async def forms_with_digits(db: Executor, client_id: UUID, digits: str) -> list[FormRow]:
    """Forms where a field value or the page, stripped to its digits, contains ``digits``
    (candidates: the caller checks each with a real number parser)."""
    rows = await db.fetch(
        f"""SELECT {_FORM_COLUMNS} FROM forms f
            WHERE client_id = $1 AND (
                EXISTS (SELECT 1 FROM jsonb_each_text(f.fields) e
                        WHERE regexp_replace(e.value, '[^0-9]', '', 'g') LIKE '%' || $2 || '%')
                OR regexp_replace(coalesce(f.page, ''), '[^0-9]', '', 'g') LIKE '%' || $2 || '%')
            ORDER BY id""",
        client_id,
        digits,
    )
    return [FormRow(**row) for row in rows]


async def recordings_of(
    db: Executor, client_id: UUID, call_ids: Sequence[UUID]
) -> list[RecordingRow]:
    rows = await db.fetch(
        f"SELECT {_RECORDING_COLUMNS} FROM recordings "
        "WHERE client_id = $1 AND call_id = ANY($2::uuid[]) ORDER BY id",
        client_id,
        list(call_ids),
    )
    return [RecordingRow(**row) for row in rows]


# -- reading them for an export ---------------------------------------------------------------


async def calls_by_ids(db: Executor, client_id: UUID, call_ids: Sequence[UUID]) -> list[Call]:
    rows = await db.fetch(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE client_id = $1 AND id = ANY($2::uuid[]) "
        "ORDER BY id",
        client_id,
        list(call_ids),
    )
    return [Call(**row) for row in rows]


async def sessions_by_ids(
    db: Executor, client_id: UUID, session_ids: Sequence[UUID]
) -> list[SessionRecord]:
    rows = await db.fetch(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE client_id = $1 AND id = ANY($2::uuid[]) "
        "ORDER BY id",
        client_id,
        list(session_ids),
    )
    return [SessionRecord(**row) for row in rows]


async def forms_by_ids(db: Executor, client_id: UUID, form_ids: Sequence[UUID]) -> list[FormRow]:
    rows = await db.fetch(
        f"SELECT {_FORM_COLUMNS} FROM forms WHERE client_id = $1 AND id = ANY($2::uuid[]) "
        "ORDER BY id",
        client_id,
        list(form_ids),
    )
    return [FormRow(**row) for row in rows]


# -- removal: anonymous counts first, then the rows -------------------------------------------


async def delete_calls_into_counts(db: Executor, client_id: UUID, call_ids: Sequence[UUID]) -> int:
    """Delete calls (their attempts and recordings go with them) and add exactly the deleted
    ones to the anonymous daily counts reports read (``call_aggregates``); how many.

    One statement, so a call erased twice at once is counted once. First-time and repeat are
    decided now, as the report would (the caller's first call ever to this client): the caller
    number that decides it is going. Every part of the statement sees the calls as they were
    before it, so the deleted calls still count when finding a caller's first call.
    """
    if not call_ids:
        return 0
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM calls WHERE client_id = $1 AND id = ANY($2::uuid[])
               RETURNING client_id, caller_number, attribution, disposition, started_at,
                         answered_at),
           judged AS (
               SELECT g.*, f.first_at FROM gone g
               LEFT JOIN LATERAL (
                   SELECT min(o.started_at) AS first_at FROM calls o
                   WHERE o.client_id = g.client_id AND o.caller_number = g.caller_number
               ) f ON g.caller_number IS NOT NULL),
           added AS (
               INSERT INTO call_aggregates AS a (client_id, day, source, medium, campaign,
                   landing_page, disposition, calls, answered, first_time, repeat)
               SELECT client_id, (started_at AT TIME ZONE 'UTC')::date,
                      attribution->>'source', attribution->>'medium',
                      attribution->>'campaign', attribution->>'landing_page', disposition,
                      count(*), count(*) FILTER (WHERE answered_at IS NOT NULL),
                      count(*) FILTER (WHERE started_at = first_at),
                      count(*) FILTER (WHERE started_at > first_at)
               FROM judged GROUP BY 1, 2, 3, 4, 5, 6, 7
               ON CONFLICT ON CONSTRAINT call_aggregates_group DO UPDATE SET
                   calls = a.calls + EXCLUDED.calls,
                   answered = a.answered + EXCLUDED.answered,
                   first_time = a.first_time + EXCLUDED.first_time,
                   repeat = a.repeat + EXCLUDED.repeat
               RETURNING 1)
           SELECT count(*) FROM gone""",
        client_id,
        list(call_ids),
    )
    return int(deleted)


async def delete_forms_into_counts(db: Executor, client_id: UUID, form_ids: Sequence[UUID]) -> int:
    """Delete form submissions and add exactly the deleted ones to the anonymous counts."""
    if not form_ids:
        return 0
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM forms WHERE client_id = $1 AND id = ANY($2::uuid[])
               RETURNING client_id, attribution, submitted_at),
           added AS (
               INSERT INTO call_aggregates AS a (client_id, day, source, medium, campaign,
                   landing_page, disposition, forms)
               SELECT client_id, (submitted_at AT TIME ZONE 'UTC')::date,
                      attribution->>'source', attribution->>'medium',
                      attribution->>'campaign', attribution->>'landing_page', NULL, count(*)
               FROM gone GROUP BY 1, 2, 3, 4, 5, 6
               ON CONFLICT ON CONSTRAINT call_aggregates_group DO UPDATE SET
                   forms = a.forms + EXCLUDED.forms
               RETURNING 1)
           SELECT count(*) FROM gone""",
        client_id,
        list(form_ids),
    )
    return int(deleted)


async def delete_deliveries_about(
    db: Executor,
    client_id: UUID,
    *,
    call_ids: Sequence[UUID] = (),
    session_ids: Sequence[UUID] = (),
    form_ids: Sequence[UUID] = (),
    recording_ids: Sequence[UUID] = (),
) -> int:
    """Delete webhook deliveries whose event is about any of these (their payloads carry the
    caller number, the visit's attribution or form values)."""
    status = await db.execute(
        """DELETE FROM webhook_deliveries WHERE client_id = $1 AND (
               payload->'data'->>'call_id' = ANY($2::text[])
               OR payload->'data'->>'session_id' = ANY($3::text[])
               OR payload->'data'->>'form_id' = ANY($4::text[])
               OR payload->'data'->>'recording_id' = ANY($5::text[]))""",
        client_id,
        [str(i) for i in call_ids],
        [str(i) for i in session_ids],
        [str(i) for i in form_ids],
        [str(i) for i in recording_ids],
    )
    return int(status.split()[-1])


async def _delete(db: Executor, table: str, client_id: UUID, ids: Sequence[UUID]) -> int:
    if not ids:
        return 0
    status = await db.execute(
        f"DELETE FROM {table} WHERE client_id = $1 AND id = ANY($2::uuid[])", client_id, list(ids)
    )
    return int(status.split()[-1])


async def delete_recordings(db: Executor, client_id: UUID, ids: Sequence[UUID]) -> int:
    """Delete recording rows; migration 0007's trigger queues each key and file for shredding."""
    return await _delete(db, "recordings", client_id, ids)


async def delete_sessions(db: Executor, client_id: UUID, ids: Sequence[UUID]) -> int:
    """Delete sessions (their forms go with them) and add exactly the deleted ones to the
    anonymous daily visit counts reports read (``call_aggregates``), by the day each started
    and the touch it was credited to; how many."""
    if not ids:
        return 0
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM sessions WHERE client_id = $1 AND id = ANY($2::uuid[])
               RETURNING client_id, attribution, created_at),
           added AS (
               INSERT INTO call_aggregates AS a (client_id, day, source, medium, campaign,
                   landing_page, disposition, visits)
               SELECT client_id, (created_at AT TIME ZONE 'UTC')::date,
                      attribution->>'source', attribution->>'medium',
                      attribution->>'campaign', attribution->>'landing_page', NULL, count(*)
               FROM gone GROUP BY 1, 2, 3, 4, 5, 6
               ON CONFLICT ON CONSTRAINT call_aggregates_group DO UPDATE SET
                   visits = a.visits + EXCLUDED.visits
               RETURNING 1)
           SELECT count(*) FROM gone""",
        client_id,
        list(ids),
    )
    return int(deleted)


# -- rectification ----------------------------------------------------------------------------


async def set_caller_number(
    db: Executor, client_id: UUID, call_id: UUID, caller_number: str | None
) -> None:
    """Correct a call's caller number, and the number in its queued and logged deliveries."""
    await db.execute(
        "UPDATE calls SET caller_number = $3 WHERE client_id = $1 AND id = $2",
        client_id,
        call_id,
        caller_number,
    )
    await _rewrite_deliveries(db, client_id, ("call_id", call_id), "caller_number", caller_number)


async def set_form_fields(
    db: Executor, client_id: UUID, form_id: UUID, fields: Mapping[str, str]
) -> None:
    """Replace a form's field values, in the form and in its deliveries."""
    await db.execute(
        "UPDATE forms SET fields = $3 WHERE client_id = $1 AND id = $2",
        client_id,
        form_id,
        dict(fields),
    )
    await _rewrite_deliveries(db, client_id, ("form_id", form_id), "fields", dict(fields))


async def _rewrite_deliveries(
    db: Executor, client_id: UUID, about: tuple[str, UUID], name: str, value: Any
) -> None:
    key, object_id = about
    await db.execute(
        """UPDATE webhook_deliveries
           SET payload = jsonb_set(payload, ARRAY['data', $4::text], coalesce($5::jsonb, 'null'))
           WHERE client_id = $1 AND payload->'data'->>$2 = $3 AND payload->'data' ? $4""",
        client_id,
        key,
        str(object_id),
        name,
        value,
    )


# -- suppression list -------------------------------------------------------------------------


async def add_suppression(
    db: Executor, client_id: UUID, subject_hash: bytes, reason: str, request_id: UUID | None
) -> bool:
    """Put a number on the list; False when it was already there for this reason."""
    added = await db.fetchval(
        """INSERT INTO suppressions (id, client_id, subject_hash, reason, request_id)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
        new_id(),
        client_id,
        subject_hash,
        reason,
        request_id,
    )
    return bool(added)


async def remove_suppressions(db: Executor, client_id: UUID, subject_hash: bytes) -> list[str]:
    """Take a number off the list for every reason; the reasons it was there for."""
    rows = await db.fetch(
        "DELETE FROM suppressions WHERE client_id = $1 AND subject_hash = $2 RETURNING reason",
        client_id,
        subject_hash,
    )
    return sorted(row["reason"] for row in rows)


async def suppressions_of(db: Executor, client_id: UUID, subject_hash: bytes) -> list[Suppression]:
    rows = await db.fetch(
        f"SELECT {SUPPRESSIONS.columns} FROM suppressions "
        "WHERE client_id = $1 AND subject_hash = $2 ORDER BY id",
        client_id,
        subject_hash,
    )
    return [Suppression(**row) for row in rows]


async def all_suppressions(db: Executor) -> list[tuple[bytes, str]]:
    """(hash, reason) of every client's entries: the router's in-memory list. The client is
    inside each keyed hash, so no entry can match another client's caller."""
    rows = await db.fetch("SELECT subject_hash, reason FROM suppressions")
    return [(row["subject_hash"], row["reason"]) for row in rows]


# -- request register -------------------------------------------------------------------------


async def insert_request(
    db: Executor,
    *,
    client_id: UUID,
    kind: str,
    subject_kind: str,
    subject_hash: bytes,
    received_at: datetime,
    due_at: datetime,
    requested_by: str,
) -> PrivacyRequest:
    row = await db.fetchrow(
        f"""INSERT INTO privacy_requests (id, client_id, kind, subject_kind, subject_hash,
                received_at, due_at, requested_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {REQUEST_COLUMNS}""",
        new_id(),
        client_id,
        kind,
        subject_kind,
        subject_hash,
        received_at,
        due_at,
        requested_by,
    )
    assert row is not None
    return PrivacyRequest(**row)


async def get_request(db: Executor, request_id: UUID, scope: UUID | None) -> PrivacyRequest | None:
    row = await db.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM privacy_requests "
        "WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        request_id,
        scope,
    )
    return PrivacyRequest(**row) if row else None


async def list_requests(
    db: Executor,
    scope: UUID | None,
    *,
    client_id: UUID | None,
    status: str | None,
    now: datetime,
    after: UUID | None,
    limit: int,
) -> list[PrivacyRequest]:
    """Requests oldest first; ``status`` open, overdue (open and past due at ``now``) or done."""
    rows = await db.fetch(
        f"""SELECT {REQUEST_COLUMNS} FROM privacy_requests
            WHERE ($1::uuid IS NULL OR client_id = $1)
              AND ($2::uuid IS NULL OR id > $2)
              AND ($4::uuid IS NULL OR client_id = $4)
              AND CASE $5::text
                      WHEN 'open' THEN status = 'open'
                      WHEN 'overdue' THEN status = 'open' AND due_at < $6
                      WHEN 'done' THEN status = 'done'
                      ELSE true END
            ORDER BY id LIMIT $3""",
        scope,
        after,
        limit,
        client_id,
        status,
        now,
    )
    return [PrivacyRequest(**row) for row in rows]


async def complete_request(
    db: Executor, request_id: UUID, client_id: UUID, outcome: dict[str, Any], at: datetime
) -> PrivacyRequest:
    """Mark a request done with what was done (counts and notices only)."""
    row = await db.fetchrow(
        f"""UPDATE privacy_requests SET status = 'done', outcome = $3, completed_at = $4
            WHERE id = $1 AND client_id = $2 RETURNING {REQUEST_COLUMNS}""",
        request_id,
        client_id,
        outcome,
        at,
    )
    assert row is not None
    return PrivacyRequest(**row)


async def requests_of(db: Executor, client_id: UUID, subject_hash: bytes) -> list[PrivacyRequest]:
    rows = await db.fetch(
        f"SELECT {REQUEST_COLUMNS} FROM privacy_requests "
        "WHERE client_id = $1 AND subject_hash = $2 ORDER BY id",
        client_id,
        subject_hash,
    )
    return [PrivacyRequest(**row) for row in rows]


# -- audit log --------------------------------------------------------------------------------


async def insert_audit(
    db: Executor,
    *,
    at: datetime,
    actor: str,
    action: str,
    client_id: UUID | None,
    subject_kind: str | None,
    subject_hash: bytes | None,
    request_id: UUID | None,
    counts: Mapping[str, int],
) -> None:
    await db.execute(
        """INSERT INTO privacy_audit (id, at, actor, action, client_id, subject_kind,
               subject_hash, request_id, counts)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        new_id(),
        at,
        actor,
        action,
        client_id,
        subject_kind,
        subject_hash,
        request_id,
        dict(counts),
    )


async def audit_of(db: Executor, client_id: UUID, subject_hash: bytes) -> list[AuditRow]:
    rows = await db.fetch(
        f"SELECT {AUDIT.columns} FROM privacy_audit "
        "WHERE client_id = $1 AND subject_hash = $2 ORDER BY id",
        client_id,
        subject_hash,
    )
    return [AuditRow(**row) for row in rows]


# -- retention --------------------------------------------------------------------------------


async def client_retention(
    db: Executor, client_id: UUID, scope: UUID | None
) -> ClientRetention | None:
    row = await db.fetchrow(
        f"SELECT {_RETENTION_COLUMNS} FROM clients WHERE id = $1 AND ($2::uuid IS NULL OR id = $2)",
        client_id,
        scope,
    )
    return ClientRetention(**row) if row else None


async def set_client_retention(
    db: Executor, client_id: UUID, scope: UUID | None, changes: Mapping[str, int | None]
) -> ClientRetention | None:
    assignments, args = set_clause(
        changes, frozenset({"recordings_retention_days", "data_retention_days"}), 3
    )
    row = await db.fetchrow(
        f"UPDATE clients SET {assignments} WHERE id = $1 AND ($2::uuid IS NULL OR id = $2) "
        f"RETURNING {_RETENTION_COLUMNS}",
        client_id,
        scope,
        *args,
    )
    return ClientRetention(**row) if row else None


async def retention_periods(db: Executor) -> list[ClientRetention]:
    """Every client's own periods (the purge walks all clients)."""
    rows = await db.fetch(f"SELECT {_RETENTION_COLUMNS} FROM clients ORDER BY id")
    return [ClientRetention(**row) for row in rows]


async def expired_recordings(
    db: Executor, client_id: UUID, cutoff: datetime, limit: int
) -> list[UUID]:
    rows = await db.fetch(
        "SELECT id FROM recordings WHERE client_id = $1 AND started_at < $2 ORDER BY id LIMIT $3",
        client_id,
        cutoff,
        limit,
    )
    return _ids(rows)


async def expired_calls(db: Executor, client_id: UUID, cutoff: datetime, limit: int) -> list[UUID]:
    """Ended calls that started before ``cutoff`` (a call in progress is never purged)."""
    rows = await db.fetch(
        "SELECT id FROM calls WHERE client_id = $1 AND started_at < $2 AND state = 'ended' "
        "ORDER BY id LIMIT $3",
        client_id,
        cutoff,
        limit,
    )
    return _ids(rows)


async def expired_forms(db: Executor, client_id: UUID, cutoff: datetime, limit: int) -> list[UUID]:
    rows = await db.fetch(
        "SELECT id FROM forms WHERE client_id = $1 AND submitted_at < $2 ORDER BY id LIMIT $3",
        client_id,
        cutoff,
        limit,
    )
    return _ids(rows)


async def expired_sessions(
    db: Executor, client_id: UUID, cutoff: datetime, limit: int
) -> list[UUID]:
    """Sessions last seen before ``cutoff`` with no form submitted since (a session's forms go
    with it, so one that still has a form inside the period waits for it)."""
    rows = await db.fetch(
        """SELECT s.id FROM sessions s
           WHERE s.client_id = $1 AND s.last_seen_at < $2
             AND NOT EXISTS (SELECT 1 FROM forms f WHERE f.client_id = s.client_id
                             AND f.session_id = s.id AND f.submitted_at >= $2)
           ORDER BY s.id LIMIT $3""",
        client_id,
        cutoff,
        limit,
    )
    return _ids(rows)


async def delete_expired_deliveries(db: Executor, client_id: UUID, cutoff: datetime) -> int:
    status = await db.execute(
        "DELETE FROM webhook_deliveries WHERE client_id = $1 AND created_at < $2",
        client_id,
        cutoff,
    )
    return int(status.split()[-1])


async def count_expired(
    db: Executor, client_id: UUID, recordings_cutoff: datetime, data_cutoff: datetime
) -> dict[str, int]:
    """What a purge would remove now, without removing it (``--dry-run``)."""
    row = await db.fetchrow(
        """SELECT
             (SELECT count(*) FROM recordings WHERE client_id = $1
                AND (started_at < $2 OR call_id IN (SELECT id FROM calls WHERE client_id = $1
                     AND started_at < $3 AND state = 'ended'))) AS recordings,
             (SELECT count(*) FROM calls WHERE client_id = $1 AND started_at < $3
                AND state = 'ended') AS calls,
             (SELECT count(*) FROM sessions s WHERE s.client_id = $1 AND s.last_seen_at < $3
                AND NOT EXISTS (SELECT 1 FROM forms f WHERE f.client_id = s.client_id
                                AND f.session_id = s.id AND f.submitted_at >= $3)) AS sessions,
             (SELECT count(*) FROM forms WHERE client_id = $1 AND submitted_at < $3) AS forms,
             (SELECT count(*) FROM webhook_deliveries WHERE client_id = $1
                AND created_at < $3) AS webhook_deliveries""",
        client_id,
        recordings_cutoff,
        data_cutoff,
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def suppression_count(db: Executor, client_id: UUID) -> int:
    """How many numbers are on the client's suppression list (the console shows the count)."""
    return int(
        await db.fetchval(
            "SELECT count(DISTINCT subject_hash) FROM suppressions WHERE client_id = $1",
            client_id,
        )
    )


async def recent_audit(db: Executor, client_id: UUID, limit: int) -> list[AuditRow]:
    """The client's latest audited operations on personal data, newest first."""
    rows = await db.fetch(
        f"SELECT {AUDIT.columns} FROM privacy_audit WHERE client_id = $1 ORDER BY id DESC LIMIT $2",
        client_id,
        limit,
    )
    return [AuditRow(**row) for row in rows]
