"""The call journal's spool: call events made durable on local disk before the database sees them.

Events are appended as JSON lines, each with a sequence number, to segment files named by the
first sequence number they hold, and fsynced once per batch: one write and one fsync for all
the events the journal gathered over its flush interval. The journal applies them to
PostgreSQL in sequence order and then notes here how far it got (the ``applied`` file). A kill
between the two replays a few events at the next start, which changes nothing: every event's
SQL is idempotent, keyed by the call id (and attempt number), so each lands exactly once. A
segment is deleted as a whole once every event in it has been applied; nothing is rewritten in
place, so a kill can at worst leave a half-written last line, which is ignored (its batch was
never acknowledged).

``encode`` is plain CPU work and runs on the event loop; the other methods block (they write
and fsync): the journal runs them in an executor, and a lock keeps a write from meeting a
segment change made for the writer in another thread. Encoding on the loop keeps the executor
thread from holding the GIL while the loop wants it: it only waits in system calls. The one
exception is the journal's re-spool of the events it held in memory while the spool was full
(up to ``[database] max_held_events`` at once, rare): that encode runs in the executor, so
the loop gets the GIL back every switch interval instead of waiting for the whole of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from callrouter import call_events
from callrouter.call_events import CallEvent

log = logging.getLogger(__name__)

_SEGMENT_SUFFIX = ".jsonl"
_TYPES: dict[str, type[Any]] = {name: getattr(call_events, name) for name in call_events.__all__}


@dataclass(frozen=True, slots=True)
class Spooled:
    """One event on disk: ``seq`` orders it and says whether the database has it yet."""

    seq: int
    event: CallEvent


@dataclass(frozen=True, slots=True)
class Encoded:
    """A batch numbered and encoded, ready for one write and one fsync."""

    spooled: list[Spooled]
    """The events with the sequence numbers they are written under."""
    data: bytes
    """Their JSON lines, one per event."""


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` already: the database has been away too long."""


def _encode(seq: int, event: CallEvent) -> bytes:
    # orjson writes the event's dataclass fields, UUIDs and datetimes itself: 6.0 -> 1.7 us
    # for a CallStarted against the json module's encoder fed a dict of its fields.
    record = {"seq": seq, "type": type(event).__name__, "event": event}
    return orjson.dumps(record, default=_plain, option=orjson.OPT_APPEND_NEWLINE)


def _plain(value: object) -> str:
    """What orjson does not write itself: asyncpg's UUID class (a subclass of uuid.UUID, of
    which orjson takes only the exact type)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _decode(line: bytes) -> Spooled:
    record = json.loads(line)
    kind = _TYPES[record["type"]]
    hints = typing.get_type_hints(kind)
    values = {name: _typed(hints[name], value) for name, value in record["event"].items()}
    event: CallEvent = kind(**values)
    return Spooled(int(record["seq"]), event)


def _typed(hint: Any, value: Any) -> Any:
    """A JSON value back as the event field's type (UUID and datetime are strings on disk)."""
    if value is None:
        return None
    options = typing.get_args(hint) or (hint,)
    if uuid.UUID in options:
        return uuid.UUID(value)
    if datetime in options:
        return datetime.fromisoformat(value)
    return value


class EventSpool:
    """Append-only segment files under ``directory``, bounded to ``max_bytes`` in all.

    :param segment_bytes: a segment is closed for a new one once it is this large and the
        database has every event in it, so applied events do not pile up on disk.
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 4 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._position = directory / "applied"
        self._next_seq = 1
        self._segments: list[tuple[int, Path]] = []
        self._file: int | None = None
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes on disk in all segments (a metric: it grows while the database is away)."""
        return self._bytes

    def open(self) -> list[Spooled]:
        """Create or reopen the spool; the events it holds that the database may not have
        yet, in order."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            applied = int(self._position.read_text().strip())
        except (OSError, ValueError):
            applied = 0
        held: list[Spooled] = []
        for path in sorted(self.directory.glob(f"*{_SEGMENT_SUFFIX}")):
            first = int(path.stem)
            self._segments.append((first, path))
            self._next_seq = max(self._next_seq, first)
            held.extend(self._read(path))
            self._bytes += path.stat().st_size
        if held:
            self._next_seq = max(self._next_seq, held[-1].seq + 1)
        self._next_seq = max(self._next_seq, applied + 1)
        self._new_segment()
        return [s for s in held if s.seq > applied]

    def _read(self, path: Path) -> list[Spooled]:
        held = []
        with path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    log.warning("spool: ignored a half-written last line in %s", path.name)
                    break
                try:
                    held.append(_decode(line))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("spool: %s:%d is not an event (%s); skipped", path.name, number, exc)
        return held

    def _new_segment(self) -> None:
        path = self.directory / f"{self._next_seq:020d}{_SEGMENT_SUFFIX}"
        # Opened before the old one is closed: when the disk is full the spool keeps a
        # working file, never a closed descriptor whose number another file may be given.
        opened = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self._file is not None:
            os.close(self._file)
        self._file = opened
        if not self._segments or self._segments[-1][1] != path:
            self._segments.append((self._next_seq, path))
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name is durable too
        finally:
            os.close(directory)

    def encode(self, batch: list[CallEvent]) -> Encoded:
        """``batch`` numbered from the next sequence number and as the bytes ``write`` appends.

        Only the next ``write`` may take it: the numbers are the spool's next ones.
        """
        spooled = [Spooled(self._next_seq + i, event) for i, event in enumerate(batch)]
        return Encoded(spooled, b"".join(_encode(s.seq, s.event) for s in spooled))

    def write(self, encoded: Encoded) -> list[Spooled]:
        """Append ``encoded`` and fsync it; returns its events. Raises SpoolFull, writing
        nothing, when it would take the spool past ``max_bytes``, and OSError (the disk is
        full), having cut off what part of the batch it wrote."""
        with self._lock:
            assert self._file is not None, "open() first"
            spooled, data = encoded.spooled, encoded.data
            assert not spooled or spooled[0].seq == self._next_seq, "encoded for another position"
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"the spool holds {self._bytes} bytes (limit {self.max_bytes})")
            end = os.fstat(self._file).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._file, view) :]
                os.fsync(self._file)
            except OSError:
                # A full disk takes part of a batch: left there, its half line would swallow
                # the first line of the next batch written, and its whole lines would replay
                # under numbers the next batch takes again.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._file, end)
                raise
            self._bytes += len(data)
            self._next_seq += len(spooled)
            return spooled

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes would fit, both under ``max_bytes`` and in the free space
        of the spool's filesystem: a cheap check (one statvfs) before encoding a large batch.
        ``write`` still decides, by raising."""
        if self._bytes + size > self.max_bytes:
            return False
        disk = os.statvfs(self.directory)
        return disk.f_bavail * disk.f_frsize >= size

    def append(self, batch: list[CallEvent]) -> list[Spooled]:
        """``encode`` and ``write`` in one call (tools and tests, which do not mind blocking)."""
        return self.write(self.encode(batch))

    def applied(self, seq: int) -> None:
        """The database has every event up to ``seq``: note it, delete the segments that hold
        only those, and start a new segment when the current one is large and fully applied."""
        with self._lock:
            self._applied(seq)

    def _applied(self, seq: int) -> None:
        temporary = self._position.with_suffix(".tmp")
        temporary.write_text(str(seq))
        os.replace(temporary, self._position)
        current = self._segments[-1][1]
        if seq >= self._next_seq - 1 and current.stat().st_size >= self.segment_bytes:
            self._new_segment()
        keep = []
        for index, (first, path) in enumerate(self._segments):
            following = self._segments[index + 1][0] if index + 1 < len(self._segments) else None
            if following is not None and following - 1 <= seq:
                self._bytes -= path.stat().st_size
                path.unlink()
            else:
                keep.append((first, path))
        self._segments = keep

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
