"""Recording rows: written once a recording's encrypted file is durable, read by the API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.call_events import RecordingFinished
from callrouter.store.database import Executor

COLUMNS = (
    "id, client_id, call_id, number_id, format, path, bytes, duration_seconds, interrupted, "
    "truncated_reason, started_at, ended_at, created_at"
)


@dataclass(frozen=True, slots=True)
class Recording:
    """One call's recording (the audio itself is in the vault-encrypted file at ``path``)."""

    id: UUID
    client_id: UUID
    call_id: UUID
    number_id: UUID | None
    format: str
    path: str
    bytes: int
    duration_seconds: float
    interrupted: bool
    truncated_reason: str | None
    """Why the audio ends before the call did (the disk filled up); None when it does not."""
    started_at: datetime
    ended_at: datetime
    created_at: datetime


def served_format(stored: str) -> str:
    """The format a download of the file is in: a raw stream kept as the final file ("pcm",
    when the disk had no room to encode it; see migration 0010) is served as WAV."""
    return "wav" if stored == "pcm" else stored


_FINISHED = f"""
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[],
        $6::float8[], $7::jsonb[], $8::boolean[], $9::text[], $10::timestamptz[])
        AS d (id, call_id, format, path, bytes, duration_seconds, peaks, interrupted,
              truncated_reason, ended_at)
), noted AS (
    UPDATE calls c SET recording_truncated_reason = d.truncated_reason
    FROM d WHERE c.id = d.call_id AND d.truncated_reason IS NOT NULL
), erased AS (
    INSERT INTO recording_disposals (recording_id, path)
    SELECT d.id, d.path FROM d WHERE NOT EXISTS (SELECT FROM calls c WHERE c.id = d.call_id)
    ON CONFLICT DO NOTHING
    RETURNING recording_id
), made AS (
    INSERT INTO recordings (id, client_id, call_id, number_id, format, path, bytes,
                            duration_seconds, peaks, interrupted, truncated_reason, started_at,
                            ended_at)
    SELECT d.id, c.client_id, c.id, c.number_id, d.format, d.path, d.bytes,
           d.duration_seconds, d.peaks, d.interrupted, d.truncated_reason,
           coalesce(c.answered_at, c.started_at), d.ended_at
    FROM d JOIN calls c ON c.id = d.call_id
    ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path
    RETURNING {COLUMNS}, xmax = 0 AS inserted
)
SELECT {COLUMNS}, inserted FROM made
UNION ALL
SELECT {", ".join(["NULL"] * len(COLUMNS.split(",")))}, NULL FROM erased
"""
"""One statement for a batch of finished files: the rows of those whose call is there, a
disposal for each of the others (an erased call's: one NULL row each in the result). ``xmax =
0`` tells a row the INSERT made from one its ON CONFLICT updated (a replay, or a file
finalised again under another name): only a new row is announced."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What one write of finished recordings did."""

    made: list[Recording]
    """Rows written for the first time (their recording.ready goes out with them)."""
    erased: int
    """Files whose call is gone (erased while the file was being finished), queued for
    shredding instead."""


async def insert_finished(db: Executor, finished: Sequence[RecordingFinished]) -> Stored:
    """The rows of durable files, owned like their calls, in one statement; a truncated one
    notes why on its call. Idempotent by recording id: a replay makes nothing new (a second
    report of one recording only updates its path, for a file finalised again).

    A missing call means an erased one: the journal writes every call's row before the
    recordings that refer to it, in the order they were recorded.
    """
    # ON CONFLICT DO UPDATE may touch a row once per statement: the last report of each.
    latest = {event.recording_id: event for event in finished}
    values = [
        (
            e.recording_id,
            e.call_id,
            e.format,
            e.path,
            e.bytes,
            e.duration_seconds,
            e.peaks,
            e.interrupted,
            e.truncated_reason,
            e.at,
        )
        for e in latest.values()
    ]
    rows = await db.fetch(_FINISHED, *(list(column) for column in zip(*values, strict=True)))
    made = []
    for row in rows:
        if row["inserted"]:
            fields = dict(row)
            del fields["inserted"]
            made.append(Recording(**fields))
    return Stored(made, sum(row["id"] is None for row in rows))


def view(recording: Recording) -> dict[str, Any]:
    """The API's (and the webhook's) view of a recording."""
    return {
        "id": recording.id,
        "client_id": recording.client_id,
        "call_id": recording.call_id,
        "number_id": recording.number_id,
        "format": served_format(recording.format),
        "bytes": recording.bytes,
        "duration_seconds": recording.duration_seconds,
        "interrupted": recording.interrupted,
        "truncated": recording.truncated_reason is not None,
        "truncated_reason": recording.truncated_reason,
        "started_at": recording.started_at,
        "ended_at": recording.ended_at,
        "created_at": recording.created_at,
    }


WITHOUT_ROWS_BATCH = 1_000
"""Ids per statement of :func:`without_rows`: a start after a full sweep of millions of files
sends bounded statements, not one that holds every id."""


async def without_rows(db: Executor, ids: Sequence[UUID]) -> dict[UUID, bool]:
    """Which of ``ids`` have neither a recording row nor a queued disposal, each with whether
    its call's row is there (a recording's id is its call's), asked :data:`WITHOUT_ROWS_BATCH`
    ids at a time. Across clients: the start-up sweep of the recordings directory asks."""
    missing: dict[UUID, bool] = {}
    for start in range(0, len(ids), WITHOUT_ROWS_BATCH):
        rows = await db.fetch(
            """SELECT i.id, EXISTS (SELECT FROM calls c WHERE c.id = i.id) AS has_call
               FROM unnest($1::uuid[]) AS i (id)
               WHERE NOT EXISTS (SELECT FROM recordings r WHERE r.id = i.id)
                 AND NOT EXISTS (SELECT FROM recording_disposals d WHERE d.recording_id = i.id)""",
            list(ids[start : start + WITHOUT_ROWS_BATCH]),
        )
        missing.update((row["id"], row["has_call"]) for row in rows)
    return missing


async def get(db: Executor, recording_id: UUID, scope: UUID | None) -> Recording | None:
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM recordings WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        recording_id,
        scope,
    )
    return Recording(**row) if row else None


async def peaks(db: Executor, recording_id: UUID, scope: UUID | None) -> dict[str, Any] | None:
    value = await db.fetchval(
        "SELECT peaks FROM recordings WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        recording_id,
        scope,
    )
    return dict(value) if value is not None else None


@dataclass(frozen=True)
class RecordingFilter:
    """What GET /v1/recordings may narrow by; None means any."""

    call_id: UUID | None = None
    number_id: UUID | None = None
    started_from: datetime | None = None
    started_before: datetime | None = None


async def list_page(
    db: Executor, scope: UUID | None, after: UUID | None, limit: int, where: RecordingFilter
) -> list[Recording]:
    rows = await db.fetch(
        f"""SELECT {COLUMNS} FROM recordings
            WHERE ($1::uuid IS NULL OR client_id = $1) AND ($2::uuid IS NULL OR id > $2)
              AND ($4::uuid IS NULL OR call_id = $4) AND ($5::uuid IS NULL OR number_id = $5)
              AND ($6::timestamptz IS NULL OR started_at >= $6)
              AND ($7::timestamptz IS NULL OR started_at < $7)
            ORDER BY id LIMIT $3""",
        scope,
        after,
        limit,
        where.call_id,
        where.number_id,
        where.started_from,
        where.started_before,
    )
    return [Recording(**row) for row in rows]


async def delete(db: Executor, recording_id: UUID, scope: UUID | None) -> bool:
    """Delete the row; migration 0007's trigger queues its key and file for shredding."""
    status = await db.execute(
        "DELETE FROM recordings WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        recording_id,
        scope,
    )
    return bool(status == "DELETE 1")


async def pending_disposals(db: Executor) -> list[tuple[UUID, str]]:
    rows = await db.fetch("SELECT recording_id, path FROM recording_disposals ORDER BY queued_at")
    return [(row["recording_id"], row["path"]) for row in rows]


async def disposed(db: Executor, recording_id: UUID) -> None:
    await db.execute("DELETE FROM recording_disposals WHERE recording_id = $1", recording_id)
