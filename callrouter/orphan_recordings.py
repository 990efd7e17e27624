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

Only files last changed before this run began are swept: those the media workers finalise
now (a new call's, or one ``recover`` finished) are reported by the workers themselves.
Reading and decoding run in the default executor, a file at a time.

Rules of the mark (how a start avoids checking a year of recordings again):

- A file's time is the later of its mtime and its ctime: when it was last written or renamed
  into place. That is the end of its recording (the final file is written after the call),
  not its start, so a long call needs no allowance. The ctime matters where the mtime lags:
  a raw stream kept as ``<id>.pcm`` keeps the mtime of its last write, which may be days old
  when a ``recover`` after a long stop renames it into place; a file copied or restored in
  keeps an old mtime (``cp -p``, ``rsync -a``). Neither can set the ctime back: a rename,
  a copy and ``utime`` itself all set it to now. Whatever else sets a file's ctime only has
  it checked again at the next start (:func:`callrouter.privileges.hand_over` changes the
  owner only of what is not the account's already: a ``chown`` to the same owner sets the
  ctime too, and would have every start check every file).
- After a sweep, once the rows it gave are in the database, the mark (a small JSON file
  under ``data_dir``, written atomically) records ``before``, the recordings directory, and
  the names of the files it kept without a row.
- The next start checks the files changed since the mark's ``before`` less
  :data:`MARGIN_SECONDS`, and the kept ones again (they are still counted in
  ``callrouter_recordings_without_row``, and a file whose key came back gets its row). A
  file left without a row since the mark was written was finalised or renamed after it, so
  its time is at least ``before`` on the clock of that moment: the margin (a day) covers
  that clock reading less than it did when the mark was written (an NTP step back, the clock
  of another node writing to shared storage, the file system's coarse clock).
- So, by induction from a sweep of every file, each sweep has checked every file changed
  before its ``before``: the kept ones are carried from mark to mark.
- No mark, a mark that cannot be read, one for another recordings directory, or one later
  than the clock now (the clock was stepped back past it): every file is checked, and the log
  says why. A mark that cannot be written (a full disk) is logged and the start goes on; the
  previous mark stays, still true, and the next start sweeps from it.
- Not covered: a clock stepped back by more than the margin while a server ran, and put right
  before the next start (files finalised in between are dated before the mark). Delete the
  mark file after such a step: the next start then checks every file.

The recordings directory is flat (``<id>.<format>``): every entry is still listed and its
time read (one ``stat`` each, nothing read from the file), but only the files past the mark
go to the database, in batches (:data:`callrouter.store.recordings.WITHOUT_ROWS_BATCH`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from callrouter.call_events import RecordingFinished
from callrouter.media.encoding import decode, peaks
from callrouter.media.g711 import RATE
from callrouter.media.recording import FORMATS, KEPT_RAW, PEAK_BUCKETS, WAV_HEADER_BYTES
from callrouter.store import recordings as store
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import Executor
from callrouter.store.ids import new_id
from callrouter.vault import Vault, VaultError
from callrouter.vault.durable import write_atomically

__all__ = ["MARGIN_SECONDS", "Mark", "Swept", "final_files", "read_mark", "sweep"]

log = logging.getLogger(__name__)

_FRAME_BYTES = 4  # a kept raw stream: one int16 sample per channel, two channels

MARGIN_SECONDS = 86_400.0
"""How far before the mark's time a start looks again: a day of clock error (see above)."""

_MARK_VERSION = 1
_NO_MARK = "no sweep mark yet"


@dataclass(frozen=True, slots=True)
class Mark:
    """How far an earlier sweep has checked."""

    recordings_dir: str
    """The directory it swept (absolute): a mark says nothing of another."""
    swept_before: float
    """Every final file changed before this (seconds since the epoch) has a row, or is kept."""
    kept: tuple[str, ...]
    """Names of the files it kept without a row (checked again at every start)."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": _MARK_VERSION,
                "recordings_dir": self.recordings_dir,
                "swept_before": self.swept_before,
                "kept": list(self.kept),
            }
        ).encode()


@dataclass(slots=True)
class Swept:
    """What a sweep found (metrics and the start-up log)."""

    recorded: int = 0
    """Files given a row (through the journal)."""
    without_call: list[UUID] = field(default_factory=list)
    """Files kept whose call's row is gone (never deleted silently)."""
    unreadable: list[UUID] = field(default_factory=list)
    """Files kept that could not be read."""
    checked: int = 0
    """Final files checked against the database: changed since the mark, or kept by it."""
    passed_over: int = 0
    """Final files older than the mark, not checked."""
    since: float | None = None
    """Files changed from this time on were checked (None: all of them, no mark was used)."""
    why_full: str = ""
    """Why every file was checked (empty when a mark was used)."""
    mark_written: bool = False
    """Whether the new mark is on disk (False: the previous one stays)."""


def read_mark(path: Path, root: Path, before: float) -> Mark | str:
    """The mark at ``path`` if it can be used for a sweep of ``root`` (absolute) at ``before``;
    otherwise why not (then every file is checked)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _NO_MARK
    except (OSError, ValueError) as exc:
        return f"the sweep mark {path} cannot be read ({exc})"
    if not isinstance(data, dict) or data.get("version") != _MARK_VERSION:
        return f"the sweep mark {path} is not a version {_MARK_VERSION} mark"
    directory, swept_before, kept = (
        data.get(k) for k in ("recordings_dir", "swept_before", "kept")
    )
    if (
        not isinstance(directory, str)
        or not isinstance(swept_before, int | float)
        or isinstance(swept_before, bool)
        or not math.isfinite(swept_before)
        or not isinstance(kept, list)
        or not all(isinstance(name, str) for name in kept)
    ):
        return f"the sweep mark {path} is damaged"
    if directory != str(root):
        return f"the sweep mark {path} is for another recordings directory, {directory}"
    if swept_before > before:
        return (
            f"the sweep mark {path} is later than the clock now "
            f"({_when(swept_before)}): the clock was stepped back"
        )
    return Mark(directory, float(swept_before), tuple(kept))


def final_files(
    root: Path, before: float, since: float | None = None, kept: frozenset[str] = frozenset()
) -> tuple[dict[UUID, str], int]:
    """Final recording files in ``root`` (``<uuid>.<flac|wav|pcm>``) last changed before
    ``before`` (seconds since the epoch), and not before ``since`` unless named in ``kept``:
    recording id -> file name; and how many were passed over as changed before ``since``."""
    found: dict[UUID, str] = {}
    passed_over = 0
    try:
        entries = os.scandir(root)
    except FileNotFoundError:
        return found, passed_over
    with entries:
        for entry in entries:
            stem, dot, suffix = entry.name.partition(".")
            if not dot or suffix not in (*FORMATS, KEPT_RAW) or not entry.is_file():
                continue
            try:
                recording_id = UUID(stem)
            except ValueError:
                continue
            if str(recording_id) != stem:
                continue
            try:
                status = entry.stat()
            except FileNotFoundError:
                continue  # shredded meanwhile (a deleted recording's disposal)
            changed = max(status.st_mtime, status.st_ctime)
            if changed >= before:
                continue
            if since is not None and changed < since and entry.name not in kept:
                passed_over += 1
                continue
            found[recording_id] = entry.name
    return found, passed_over


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
    db: Executor,
    vault: Vault,
    root: Path,
    before: float,
    *,
    journal: CallJournal,
    mark: Path,
) -> Swept:
    """Give a row to every final file in ``root`` changed before ``before`` that has none,
    checking only those changed since the mark at ``mark`` (less the margin) and those it
    kept; then move the mark to ``before``.

    :param journal: each file's row is recorded after every call event recorded before it,
        so a call's own row comes first; the mark is written once the journal has them in.
    """
    loop = asyncio.get_running_loop()
    root = await loop.run_in_executor(None, root.resolve)
    found = await loop.run_in_executor(None, read_mark, mark, root, before)
    swept = Swept()
    kept: frozenset[str] = frozenset()
    if isinstance(found, Mark):
        swept.since, kept = found.swept_before - MARGIN_SECONDS, frozenset(found.kept)
    else:
        swept.why_full = found
        log.log(
            logging.INFO if found == _NO_MARK else logging.WARNING,
            "recordings: checking every file: %s",
            found,
        )
    files, swept.passed_over = await loop.run_in_executor(
        None, final_files, root, before, swept.since, kept
    )
    swept.checked = len(files)
    missing = await store.without_rows(db, sorted(files))
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
        journal.record(event)
        swept.recorded += 1
    if swept.without_call:
        log.warning(
            "recordings: %d finalised file(s) with no row whose call is gone, kept in %s: %s",
            len(swept.without_call),
            root,
            ", ".join(files[r] for r in swept.without_call),
        )
    if swept.recorded:
        await journal.flushed()  # the mark may pass a file only once its row is in
    still_kept = tuple(sorted(files[r] for r in (*swept.without_call, *swept.unreadable)))
    written = Mark(str(root), before, still_kept).to_json()
    try:
        await loop.run_in_executor(None, write_atomically, mark, written)
    except OSError as exc:
        log.error(
            "recordings: cannot write the sweep mark %s (%s); the next start checks again "
            "what this one did",
            mark,
            exc,
        )
    else:
        swept.mark_written = True
    return swept


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
