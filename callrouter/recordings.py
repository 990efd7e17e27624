"""Recordings at rest, in the signalling process: rows for finished files, downloads, shredding.

The media worker writes and finalises the encrypted files; each finished file becomes a call
event (``finished_event``) that the call journal spools and stores after its call's row, with
its ``recording.ready`` webhook event. This service logs each row once the journal has made it
(``written``), decrypts files for downloads and exports, and destroys the data key and file of
every deleted recording (crypto-shredding). Decryption and file work run in the default
executor so the event loop never waits on a disk or on AES.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol
from uuid import UUID

import asyncpg

from callrouter.call_events import RecordingFinished
from callrouter.media.recording import KEPT_RAW
from callrouter.store import recordings as store
from callrouter.store.call_rows import Written
from callrouter.store.ids import new_id
from callrouter.vault import RecordingReader, Vault, VaultError

__all__ = ["CHUNK_BYTES", "AudioFile", "Recordings", "finished_event"]


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
    """

    def __init__(self, db: asyncpg.Pool[asyncpg.Record], vault: Vault, root: Path) -> None:
        self.db = db
        self.vault = vault
        self.root = root
        self._disposing = asyncio.Lock()
        self._tasks: set[asyncio.Task[int]] = set()

    def file(self, path: str) -> Path:
        """The file a row's ``path`` names; never outside the recordings directory."""
        return self.root / Path(path).name

    def written(self, written: Written) -> None:
        """The call journal committed recording rows (each logged once, now that it is
        durable), or queued the files of erased calls for shredding (shredded now)."""
        for recording in written.recordings:
            _log_ready(recording)
        if written.erased:
            log.info("recordings: %d finished after their call was erased", written.erased)
            task = asyncio.get_running_loop().create_task(self.dispose_pending())
            self._tasks.add(task)
            task.add_done_callback(self._disposed)

    def _disposed(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The queue stays in the database: the disposal duty takes it up again.
            log.error("recordings: shredding failed (%s); the disposal duty retries", exc)

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


def finished_event(call_id: UUID, data: dict[str, Any], at: datetime) -> RecordingFinished:
    """The worker's description of a finished file (``recording_ready``, or an item of a
    ``recover`` reply) as a call event for the journal.

    :param at: when the file was finished: the recording's end.
    """
    return RecordingFinished(
        call_id=call_id,
        recording_id=UUID(str(data["id"])),
        event_id=new_id(),
        path=str(data["path"]),
        format=str(data["format"]),
        bytes=int(data["bytes"]),
        duration_seconds=float(data["duration_seconds"]),
        peaks=dict(data.get("peaks") or {}),
        interrupted=bool(data.get("interrupted")),
        truncated_reason=None if data.get("truncated") is None else str(data["truncated"]),
        at=at,
    )


def _log_ready(recording: store.Recording) -> None:
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
