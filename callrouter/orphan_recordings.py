"""The start-up sweep of the recordings directory: finalised files with no row.

A finished recording's row rides the call journal (spooled with the call's events), so a kill
or an outage does not lose it. A file can still be left without one: finalised by a server
from before that (whose row waited in memory and died with it), or a kill between the media
worker's rename of the final file and the journal's spool write. Each such file is read (the
vault checks the recording id in its header against its name, and a recording's id is its
call's id), described as the media worker would have (size, duration, peaks) and recorded as
a ``RecordingFinished`` when its call's row is there. A file whose call's row is not there,
or that cannot be read (its key shredded, the file damaged), is logged and counted, and left
where it is: never deleted silently.

Only files last written before this run began are swept: those the media workers finalise
now (a new call's, or one ``recover`` finished) are reported by the workers themselves.
Reading and decoding run in the default executor, a file at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from callrouter.call_events import CallEvent, RecordingFinished
from callrouter.media.encoding import decode, peaks
from callrouter.media.g711 import RATE
from callrouter.media.recording import FORMATS, KEPT_RAW, PEAK_BUCKETS, WAV_HEADER_BYTES
from callrouter.store import recordings as store
from callrouter.store.ids import new_id
from callrouter.vault import Vault, VaultError

__all__ = ["Swept", "final_files", "sweep"]

log = logging.getLogger(__name__)

_FRAME_BYTES = 4  # a kept raw stream: one int16 sample per channel, two channels


@dataclass(slots=True)
class Swept:
    """What a sweep found (metrics and the start-up log)."""

    recorded: int = 0
    """Files given a row (through the journal)."""
    without_call: list[UUID] = field(default_factory=list)
    """Files kept whose call's row is gone (never deleted silently)."""
    unreadable: list[UUID] = field(default_factory=list)
    """Files kept that could not be read."""


def final_files(root: Path, before: float) -> dict[UUID, str]:
    """Final recording files in ``root`` (``<uuid>.<flac|wav|pcm>``), last written before
    ``before`` (seconds since the epoch): recording id -> file name."""
    found: dict[UUID, str] = {}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return found
    for entry in entries:
        stem, dot, suffix = entry.name.partition(".")
        if not dot or suffix not in (*FORMATS, KEPT_RAW) or not entry.is_file():
            continue
        try:
            recording_id = UUID(stem)
        except ValueError:
            continue
        try:
            written = entry.stat().st_mtime
        except FileNotFoundError:
            continue  # shredded meanwhile (a deleted recording's disposal)
        if str(recording_id) == stem and written < before:
            found[recording_id] = entry.name
    return found


def describe(vault: Vault, root: Path, recording_id: UUID, name: str) -> RecordingFinished:
    """The file as the media worker reports a finished one (it cannot say whether the audio
    was cut short: it is described as whole).

    :raises VaultError, OSError, ValueError: the file cannot be read or decoded.
    """
    path = root / name
    finished_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    with vault.reader(recording_id, path) as reader:
        plain = reader.read_all()
    format = name.partition(".")[2]
    if format == KEPT_RAW:
        size, frames = WAV_HEADER_BYTES + len(plain), len(plain) // _FRAME_BYTES
        waveform = peaks(plain[: frames * _FRAME_BYTES], PEAK_BUCKETS)
    else:
        audio, rate = decode(plain)
        size, frames = len(plain), len(audio) * RATE // rate
        waveform = peaks(audio, PEAK_BUCKETS)
    return RecordingFinished(
        call_id=recording_id,
        recording_id=recording_id,
        event_id=new_id(),
        path=name,
        format=format,
        bytes=size,
        duration_seconds=frames / RATE,
        peaks=dict(waveform),
        interrupted=False,
        truncated_reason=None,
        at=finished_at,
    )


async def sweep(
    db: asyncpg.Pool[asyncpg.Record],
    vault: Vault,
    root: Path,
    before: float,
    record: Callable[[CallEvent], None],
) -> Swept:
    """Give a row to every final file in ``root`` from before ``before`` that has none.

    :param record: the call journal's ``record``: each file's row is written after every
        call event recorded before it, so a call's own row comes first.
    """
    loop = asyncio.get_running_loop()
    files = await loop.run_in_executor(None, final_files, root, before)
    missing = await store.without_rows(db, list(files)) if files else {}
    swept = Swept()
    for recording_id, has_call in sorted(missing.items()):
        if not has_call:
            swept.without_call.append(recording_id)
            continue
        try:
            event = await loop.run_in_executor(
                None, describe, vault, root, recording_id, files[recording_id]
            )
        except (VaultError, OSError, ValueError) as exc:
            log.error("recordings: %s has no row and cannot be read: %s", files[recording_id], exc)
            swept.unreadable.append(recording_id)
            continue
        record(event)
        swept.recorded += 1
    if swept.without_call:
        log.warning(
            "recordings: %d finalised file(s) with no row whose call is gone, kept in %s: %s",
            len(swept.without_call),
            root,
            ", ".join(files[r] for r in swept.without_call),
        )
    return swept
