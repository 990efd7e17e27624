"""Recordings at rest, in the signalling process: rows for finished files, downloads, shredding.

The media worker writes and finalises the encrypted files; this service records them once they
are durable (``recording.ready`` goes out then), decrypts them for downloads and exports, and
destroys the data key and file of every deleted recording (crypto-shredding). Decryption and file
work run in the default executor so the event loop never waits on a disk or on AES.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol
from uuid import UUID

import asyncpg

from callrouter.media.recording import KEPT_RAW
from callrouter.store import recordings as store
from callrouter.vault import RecordingReader, Vault, VaultError
from callrouter.webhooks import WebhookSender

__all__ = ["CHUNK_BYTES", "AudioFile", "Recordings", "finished_file", "view"]


UNREADABLE: Final = (VaultError, OSError)
"""What ``Recordings.open`` raises for a recording that cannot be read (its key shredded, its
file gone or damaged): callers outside the vault's layer catch these."""

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
"""Download chunk: four 16 KiB vault segments."""
# A kept raw stream (the worker had no room to encode it) is interleaved little-endian int16
# stereo at 8 kHz: a WAV file's data chunk, so it is served as WAV behind a header.
_RATE: Final = 8000
_CHANNELS: Final = 2
_SAMPLE_BYTES: Final = 2


class AudioFile(Protocol):
    """A decrypted recording as downloads read it."""

    plaintext_size: int

    def read_range(self, start: int, end: int) -> bytes: ...

    def close(self) -> None: ...


class WavOfRaw:
    """A kept raw stream read as a WAV file: a 44-byte header made up front, then the samples
    as stored, so ranges and sizes work as for any file."""

    def __init__(self, raw: RecordingReader) -> None:
        self._raw = raw
        data = raw.plaintext_size
        block = _CHANNELS * _SAMPLE_BYTES
        self._header = struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            36 + data,
            b"WAVE",
            b"fmt ",
            16,
            1,  # PCM
            _CHANNELS,
            _RATE,
            _RATE * block,
            block,
            8 * _SAMPLE_BYTES,
            b"data",
            data,
        )
        self.plaintext_size = len(self._header) + data

    def read_range(self, start: int, end: int) -> bytes:
        head = self._header[start:end]
        skip = len(self._header)
        if end <= skip:
            return head
        return head + self._raw.read_range(max(start, skip) - skip, end - skip)

    def close(self) -> None:
        self._raw.close()


class Recordings:
    """The recordings service (implements privacy's ``RecordingArchive``).

    :param root: the recordings directory; rows hold paths relative to it.
    :param webhooks: where ``recording.ready`` goes (None: no events).
    :param calls_written: awaited before a finished file's row is written: the call journal's
        ``flushed()``. The journal writes the call's row behind the call (SIP does not wait for
        it), so a short recording can finish first; without this wait its insert would find no
        call, take it for erased and shred the file. None when calls are written synchronously
        (the API's tests).
    """

    def __init__(
        self,
        db: asyncpg.Pool[asyncpg.Record],
        vault: Vault,
        root: Path,
        *,
        webhooks: WebhookSender | None = None,
        calls_written: Callable[[], Awaitable[None]] | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.calls_written = calls_written
        self.vault = vault
        self.root = root
        self.webhooks = webhooks
        self.wall = wall
        self._disposing = asyncio.Lock()

    def file(self, path: str) -> Path:
        """The file a row's ``path`` names; never outside the recordings directory."""
        return self.root / Path(path).name

    async def finished(self, call_id: UUID, done: store.FinishedFile) -> store.Recording | None:
        """A file is durable: write its row and tell the client. None when its call was erased
        meanwhile (the file is shredded instead)."""
        if self.calls_written is not None:
            # Every call event recorded so far, this call's CallStarted among them (it is
            # recorded before the call's media is anchored), must be in the database first:
            # only then does a missing call row mean the call was erased.
            await self.calls_written()
        try:
            recording = await store.insert(self.db, call_id, done, self.wall())
        except LookupError as exc:
            log.info("recording %s: %s", done.id, exc)
            await self.dispose_pending()
            return None
        if self.webhooks is not None:
            await self.webhooks.emit(recording.client_id, "recording.ready", view(recording))
        note = ", interrupted" if recording.interrupted else ""
        if recording.truncated_reason is not None:
            note += f", truncated: {recording.truncated_reason}"
        # One line per recording once its row is durable; the fields are what tools read.
        log.info(
            "recording: %s of call %s ready (%.1f s%s)",
            recording.id,
            recording.call_id,
            recording.duration_seconds,
            note,
            extra={
                "event": "recording.ready",
                "recording_id": str(recording.id),
                "call_id": str(recording.call_id),
                "duration_seconds": recording.duration_seconds,
                "interrupted": recording.interrupted,
                "truncated_reason": recording.truncated_reason,
            },
        )
        return recording

    async def dispose_pending(self) -> int:
        """Shred the key, then remove the file, of every queued disposal; how many."""
        loop = asyncio.get_running_loop()
        count = 0
        async with self._disposing:
            for recording_id, path in await store.pending_disposals(self.db):
                await loop.run_in_executor(None, self._shred, recording_id, path)
                await store.disposed(self.db, recording_id)
                count += 1
        return count

    def _shred(self, recording_id: UUID, path: str) -> None:
        # The key first: once it is gone every copy of the file, backups included, is noise.
        self.vault.shred(recording_id)
        target = self.file(path)
        for leftover in (target, target.with_name(target.name + ".part")):
            leftover.unlink(missing_ok=True)

    async def open(self, recording_id: UUID, path: str) -> AudioFile:
        """A reader of the decrypted file (a kept raw stream reads as WAV); raises VaultError
        with the reason when it fails."""
        loop = asyncio.get_running_loop()
        reader = await loop.run_in_executor(
            None, partial(self.vault.reader, recording_id, self.file(path))
        )
        return WavOfRaw(reader) if path.endswith(f".{KEPT_RAW}") else reader

    async def chunks(
        self, reader: AudioFile, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Decrypted bytes [start, end) of an open reader, a chunk at a time."""
        loop = asyncio.get_running_loop()
        stop = reader.plaintext_size if end is None else min(end, reader.plaintext_size)
        position = start
        while position < stop:
            upto = min(position + CHUNK_BYTES, stop)
            yield await loop.run_in_executor(None, reader.read_range, position, upto)
            position = upto

    async def audio(self, recording_id: UUID, path: str) -> AsyncIterator[bytes]:
        """The whole decrypted audio file in chunks (for access exports)."""
        reader = await self.open(recording_id, path)
        try:
            async for chunk in self.chunks(reader):
                yield chunk
        finally:
            reader.close()

    async def worker_event(self, event: dict[str, Any]) -> None:
        """``recording_ready`` / ``recording_failed`` from the media worker."""
        kind = event.get("event")
        if kind == "recording_ready":
            call_id = UUID(str(event["call"]))
            await self.finished(call_id, finished_file(event["recording"]))
        elif kind == "recording_failed":
            log.error("recording %s failed: %s", event.get("recording"), event.get("error"))

    async def recovered(self, files: list[dict[str, Any]]) -> int:
        """Rows for recordings a dead worker left, finalised by the new one; how many."""
        count = 0
        for item in files:
            done = finished_file(item)
            if await self.finished(done.id, done) is not None:
                count += 1
        return count


def finished_file(data: dict[str, Any]) -> store.FinishedFile:
    """The worker's description of a finished file (its id is the call's id)."""
    return store.FinishedFile(
        id=UUID(str(data["id"])),
        path=str(data["path"]),
        format=str(data["format"]),
        bytes=int(data["bytes"]),
        duration_seconds=float(data["duration_seconds"]),
        peaks=dict(data.get("peaks") or {}),
        interrupted=bool(data.get("interrupted")),
        truncated_reason=None if data.get("truncated") is None else str(data["truncated"]),
    )


def view(recording: store.Recording) -> dict[str, Any]:
    """The API's (and the webhook's) view of a recording."""
    return {
        "id": recording.id,
        "client_id": recording.client_id,
        "call_id": recording.call_id,
        "number_id": recording.number_id,
        "format": store.served_format(recording.format),
        "bytes": recording.bytes,
        "duration_seconds": recording.duration_seconds,
        "interrupted": recording.interrupted,
        "truncated": recording.truncated_reason is not None,
        "truncated_reason": recording.truncated_reason,
        "started_at": recording.started_at,
        "ended_at": recording.ended_at,
        "created_at": recording.created_at,
    }
