"""Recording rows: written once a recording's encrypted file is durable, read by the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

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


@dataclass(frozen=True, slots=True)
class FinishedFile:
    """What the media worker reports for a finalised recording file."""

    id: UUID
    path: str
    format: str
    bytes: int
    duration_seconds: float
    peaks: dict[str, Any]
    interrupted: bool
    truncated_reason: str | None = None


def served_format(stored: str) -> str:
    """The format a download of the file is in: a raw stream kept as the final file ("pcm",
    when the disk had no room to encode it; see migration 0010) is served as WAV."""
    return "wav" if stored == "pcm" else stored


async def insert(db: Executor, call_id: UUID, done: FinishedFile, ended_at: datetime) -> Recording:
    """The row for a durable file, owned like its call; a truncated one notes why on the call.

    :raises LookupError: the call is gone (erased while the file was being finished); the file
        is queued for shredding instead.
    """
    row = await db.fetchrow(
        f"""WITH noted AS (
                UPDATE calls SET recording_truncated_reason = $10
                WHERE id = $2 AND $10::text IS NOT NULL
            )
            INSERT INTO recordings (id, client_id, call_id, number_id, format, path, bytes,
                                    duration_seconds, peaks, interrupted, truncated_reason,
                                    started_at, ended_at)
            SELECT $1, client_id, id, number_id, $3, $4, $5, $6, $7, $8, $10,
                   coalesce(answered_at, started_at), $9
            FROM calls WHERE id = $2
            ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path
            RETURNING {COLUMNS}""",
        done.id,
        call_id,
        done.format,
        done.path,
        done.bytes,
        done.duration_seconds,
        done.peaks,
        done.interrupted,
        ended_at,
        done.truncated_reason,
    )
    if row is None:
        await db.execute(
            "INSERT INTO recording_disposals (recording_id, path) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            done.id,
            done.path,
        )
        raise LookupError(f"call {call_id} no longer exists; recording queued for shredding")
    return Recording(**row)


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
