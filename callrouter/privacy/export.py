"""The access export: everything held about a subject, as one zip streamed as it is written.

The archive holds one JSON file per call (with its attempts and attribution), per visit and
per form submission, the decrypted audio of each recording, the suppression entries and the
register and audit history of the subject, and ``index.json`` last: a machine-readable list of
every file with its size and SHA-256. The rows are those an erasure of the same subject would
remove (``erasure.find_subject_rows``).

Nothing is held whole in memory: rows are read in batches, and the zip is written to a spool
that is drained to the consumer (an HTTP response, a file) after every entry and every audio
chunk. Zip entries written this way carry their sizes after their data (a data descriptor),
which every unzip tool reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from callrouter.privacy.archive import RecordingArchive
from callrouter.privacy.erasure import SubjectRows
from callrouter.privacy.subjects import Subject, SubjectHasher
from callrouter.store import calls as call_store
from callrouter.store import privacy as store
from callrouter.store.database import Executor
from callrouter.store.recordings import served_format

__all__ = ["EXPORT_FORMAT", "ExportSummary", "write_export"]

EXPORT_FORMAT = "callrouter-export/1"
BATCH = 100

Write = Callable[[bytes], Awaitable[None]]

README = """\
Personal data held by a callrouter server about one data subject.

index.json       what this archive holds: every file with its size and SHA-256
calls/           each call: when, to which tracking number, how it ended, every destination
                 tried, the caller number and the visit (attribution) it was attributed to
sessions/        each website visit: campaign, referrer, landing page, browser, network (/24)
forms/           each form submission: the form, its field values, the page, the visit
recordings/      the audio of each recorded call, decrypted
suppression.json whether the number is on the suppression list, and why
requests.json    the privacy requests received about this subject and what was done
audit.json       every deletion, export and correction of this subject's data
"""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """How many of each item the export held."""

    calls: int = 0
    sessions: int = 0
    forms: int = 0
    recordings: int = 0
    audio_bytes: int = 0
    suppressions: int = 0
    requests: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)


class _Spool(io.RawIOBase):
    """A write-only, unseekable sink that zipfile writes to and the exporter drains."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)


def _default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _json(data: Any) -> bytes:
    return json.dumps(data, default=_default, indent=2, ensure_ascii=False).encode() + b"\n"


def _batches(ids: Sequence[UUID]) -> list[Sequence[UUID]]:
    return [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]


class _Zip:
    """One archive being written: entries go in, bytes come out to ``write``."""

    def __init__(self, write: Write, now: datetime) -> None:
        self._write = write
        self._spool = _Spool()
        self._zip = zipfile.ZipFile(self._spool, "w")
        self._stamp = now.astimezone(UTC).timetuple()[:6]
        self.items: list[dict[str, Any]] = []

    def _info(self, path: str, compression: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(path, self._stamp)
        info.compress_type = compression
        info.external_attr = 0o600 << 16
        return info

    async def put(self, path: str, body: bytes, **about: Any) -> None:
        self._zip.writestr(self._info(path, zipfile.ZIP_DEFLATED), body)
        await self._write(self._spool.take())
        self.items.append(
            {**about, "path": path, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        )

    async def put_stream(self, path: str, chunks: Any, **about: Any) -> int:
        """Copy an async stream of bytes in, stored as is (audio is compressed already)."""
        digest = hashlib.sha256()
        size = 0
        # force_zip64: the size is unknown until the end and may pass 4 GiB.
        with self._zip.open(self._info(path, zipfile.ZIP_STORED), "w", force_zip64=True) as entry:
            async for chunk in chunks:
                entry.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                await self._write(self._spool.take())
        await self._write(self._spool.take())
        self.items.append({**about, "path": path, "bytes": size, "sha256": digest.hexdigest()})
        return size

    async def close(self) -> None:
        self._zip.close()
        await self._write(self._spool.take())


async def write_export(
    db: Executor,
    client_id: UUID,
    subject: Subject,
    rows: SubjectRows,
    *,
    hasher: SubjectHasher,
    archive: RecordingArchive | None,
    write: Write,
    now: datetime,
    request_id: UUID | None = None,
) -> ExportSummary:
    """Write the export of ``rows`` (found for ``subject``) as a zip, chunk by chunk.

    :param archive: decrypts the audio; may be None only when ``rows`` hold no recording.
    :param write: receives the archive's bytes in order (a response's ``write``).
    """
    if rows.recording_ids and archive is None:
        raise ValueError("exporting recordings needs the recordings archive")
    out = _Zip(write, now)
    await out.put("README.txt", README.encode(), type="readme")
    calls = sessions = forms = recordings = audio_bytes = 0
    for batch in _batches(rows.call_ids):
        found = await store.calls_by_ids(db, client_id, batch)
        attempts = await call_store.attempts_of(db, [c.id for c in found])
        by_call: dict[UUID, list[dict[str, Any]]] = {}
        for recording in await store.recordings_of(db, client_id, batch):
            view = asdict(recording)
            view["file"] = f"recordings/{recording.id}.{served_format(recording.format)}"
            del view["path"]
            by_call.setdefault(recording.call_id, []).append(view)
        for call in found:
            data = {
                **asdict(call),
                "attempts": [asdict(a) for a in attempts[call.id]],
                "recordings": by_call.get(call.id, []),
            }
            await out.put(f"calls/{call.id}.json", _json(data), type="call", id=call.id)
            calls += 1
    for batch in _batches(rows.session_ids):
        for session in await store.sessions_by_ids(db, client_id, batch):
            await out.put(
                f"sessions/{session.id}.json", _json(asdict(session)), type="session", id=session.id
            )
            sessions += 1
    for batch in _batches(rows.form_ids):
        for form in await store.forms_by_ids(db, client_id, batch):
            await out.put(f"forms/{form.id}.json", _json(asdict(form)), type="form", id=form.id)
            forms += 1
    for batch in _batches(rows.call_ids):
        for recording in await store.recordings_of(db, client_id, batch):
            assert archive is not None
            audio_bytes += await out.put_stream(
                f"recordings/{recording.id}.{served_format(recording.format)}",
                archive.audio(recording.id, recording.path),
                type="recording",
                id=recording.id,
                call_id=recording.call_id,
                format=recording.format,
                duration_seconds=recording.duration_seconds,
            )
            recordings += 1
    digest = hasher.digest(client_id, subject)
    listed = await store.suppressions_of(db, client_id, digest) if subject.kind == "phone" else []
    await out.put(
        "suppression.json",
        _json(
            {
                "suppressed": any(s.reason == "objection" for s in listed),
                "recording_allowed": not listed,
                "entries": [
                    {"reason": s.reason, "since": s.created_at, "request_id": s.request_id}
                    for s in listed
                ],
            }
        ),
        type="suppression",
    )
    history = await store.requests_of(db, client_id, digest)
    await out.put(
        "requests.json",
        _json([{k: v for k, v in asdict(r).items() if k != "subject_hash"} for r in history]),
        type="requests",
    )
    trail = await store.audit_of(db, client_id, digest)
    await out.put(
        "audit.json",
        _json([{k: v for k, v in asdict(a).items() if k != "subject_hash"} for a in trail]),
        type="audit",
    )
    summary = ExportSummary(
        calls, sessions, forms, recordings, audio_bytes, len(listed), len(history)
    )
    index = {
        "format": EXPORT_FORMAT,
        "generated_at": now,
        "client_id": client_id,
        "request_id": request_id,
        "subject": {"kind": subject.kind, "value": subject.value},
        "counts": summary.counts(),
        "items": out.items,
    }
    await out.put("index.json", _json(index), type="index")
    await out.close()
    return summary
