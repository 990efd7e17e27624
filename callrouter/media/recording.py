"""Recording in the media worker: the raw stream while a call runs, the final file after it.

Rules of this file:

- Plaintext never reaches the disk. Every file is written by the vault, sealed with the
  recording's data key; audio is encoded to FLAC or WAV in memory.
- The files of recording ``<id>`` in the recordings directory:

      raw/worker-<n>/<id>.raw.part   the raw stream while the call is recorded (interleaved
                                     int16 stereo), in the raw directory of the worker
                                     recording it
      raw/worker-<n>/<id>.raw        the raw stream once closed, until the final file is made
      <id>.<format>      the final file; "flac" or "wav" ("wav" when the recording is empty)
      <id>.pcm           the raw stream kept as the final file when the disk has no room for
                         the encoded one (served as WAV: the same samples behind a header)

- While a call is recorded, its recorder is drained once a second and what is final is written
  and flushed, so a worker that dies loses at most about two seconds.
- Each worker keeps its raw streams in its own directory (``raw_dir``), so the ``recover`` of a
  restarted worker finalises what that worker left behind and never touches a raw stream
  another worker of the same server is still writing. Directories no running worker owns (the
  recordings directory itself, where raw streams lived before there were several workers, and
  those of workers no longer configured) are ``adopt``ed by one worker: their raw streams are
  moved into its own directory at each ``recover``.
- The raw file is deleted (or renamed to ``<id>.pcm`` when kept as the final file) only once
  the final file is in place, and just before a connected controller is told
  (``recording_ready``, or the ``recover`` reply). With no controller connected it stays, and
  the next ``recover`` finalises it again: a recording is never lost for want of a listener.
- A full disk (or any other failed write) never throws a recording away. Everything that
  reached the disk is kept: the raw file is cut back to its last whole segment and sealed as
  finished (:meth:`Vault.recover`), then finalised like any other; when even the encoded file
  does not fit, the raw stream itself is kept as ``<id>.pcm``. The recording is reported with
  ``truncated`` saying why its audio ends before the call did.
- Blocking work runs in threads, never on the worker's loop: one thread for the raw streams,
  taking jobs in the order they are given (a recording's writes, then its close), and one for
  finalising (decrypt, encode, seal, peaks), so a long encode never holds up the raw writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypedDict
from uuid import UUID

from callrouter.media.encoding import Peaks, encode, peaks
from callrouter.media.g711 import RATE
from callrouter.media.heap import HeapTrim
from callrouter.media.recorder import Codec, StereoRecorder
from callrouter.media.relay import RelaySession
from callrouter.vault import (
    DEFAULT_SEGMENT_BYTES,
    RecordingWriter,
    Vault,
    VaultError,
    part_path_of,
)
from callrouter.vault.durable import fsync_directory
from callrouter.vault.stream import MAX_SEGMENT_BYTES

__all__ = [
    "FORMATS",
    "KEPT_RAW",
    "PEAK_BUCKETS",
    "WAV_HEADER_BYTES",
    "FailedRecording",
    "FinishedRecording",
    "RecordingError",
    "RecordingSettings",
    "Recordings",
    "orphaned_raw_directories",
    "raw_directory",
]

log = logging.getLogger(__name__)

FORMATS: Final = ("flac", "wav")
KEPT_RAW: Final = "pcm"
"""The format of a raw stream kept as the final file (interleaved int16 stereo at 8 kHz)."""
WAV_HEADER_BYTES: Final = 44
"""A kept raw stream is downloaded as WAV: these header bytes, then the samples as stored."""
_NO_ROOM: Final = (errno.ENOSPC, errno.EDQUOT)
PEAK_BUCKETS: Final = 800
"""Waveform buckets per channel in a finished recording's peaks (a player's width)."""
_FRAME_BYTES: Final = 4  # one int16 sample per channel
_DRAIN_EVERY: Final = 1.0


@dataclass(frozen=True)
class RecordingSettings:
    """Where a media worker keeps recordings and how it seals and encodes them."""

    recordings_dir: Path
    """Directory of the recording files (raw streams while calls last, final files after)."""
    key_ring: Path
    """The vault's key ring file."""
    keys_dir: Path
    """The vault's key store directory."""
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    """Plaintext bytes per sealed segment of every file written."""
    format: str = "flac"
    """Format of the final files: "flac" or "wav"."""
    raw_dir: Path | None = None
    """This worker's directory of raw streams; None: the recordings directory itself."""
    adopt: tuple[Path, ...] = ()
    """Raw directories no running worker writes to, whose leftovers this worker finalises."""

    @property
    def raw_streams(self) -> Path:
        return self.raw_dir if self.raw_dir is not None else self.recordings_dir

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"recording format {self.format!r} is not one of {FORMATS}")
        if not 1 <= self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment size {self.segment_bytes} is outside 1..{MAX_SEGMENT_BYTES}")

    def arguments(self) -> list[str]:
        """The media worker's command-line options that carry these settings."""
        return [
            "--recordings-dir",
            str(self.recordings_dir),
            "--key-ring",
            str(self.key_ring),
            "--keys-dir",
            str(self.keys_dir),
            "--segment-bytes",
            str(self.segment_bytes),
            "--format",
            self.format,
            *(["--raw-dir", str(self.raw_dir)] if self.raw_dir is not None else []),
            *(argument for path in self.adopt for argument in ("--adopt", str(path))),
        ]


class RecordingError(Exception):
    """A recording command the worker cannot carry out; the message goes to the controller."""


class FinishedRecording(TypedDict):
    """A final recording file, as events and the ``recover`` reply describe it (JSON)."""

    id: str
    """The recording's UUID."""
    path: str
    """The final file, relative to the recordings directory: ``<id>.<format>``."""
    format: str
    """"flac" or "wav"."""
    bytes: int
    """Size of the decrypted file (what a download serves)."""
    duration_seconds: float
    """Length of the audio."""
    peaks: Peaks
    """Waveform summary, :data:`PEAK_BUCKETS` buckets per channel."""
    interrupted: bool
    """True when finalised by ``recover`` from what a worker that stopped left: the audio may
    end before the call did."""
    counters: dict[str, Any] | None
    """The recorder's counters per leg (placed, late, duplicates, ...); None when recovered."""
    truncated: str | None
    """Why the audio stops before the call did (the disk filled up), or None."""


class FailedRecording(TypedDict):
    """A leftover recording that ``recover`` could not finalise (its files are left)."""

    recording: str
    error: str


@dataclass(frozen=True)
class _FinalFile:
    path: str
    format: str
    bytes: int
    frames: int
    peaks: Peaks


@dataclass(eq=False)
class _Active:
    """A call being recorded."""

    id: UUID
    call: str
    recorder: StereoRecorder
    session: RelaySession
    writer: RecordingWriter | None = None
    """None until the raw file is open (the recorder buffers meanwhile)."""
    flushed_bytes: int = 0
    """Raw plaintext made durable so far."""


class Recordings:
    """The recordings of one media worker.

    :param settings: where files go and the final format.
    :param vault: seals and opens every file.
    :param emit: sends an unsolicited event to the controller.
    :param connected: whether a controller is connected to hear events.
    """

    def __init__(
        self,
        settings: RecordingSettings,
        vault: Vault,
        emit: Callable[[dict[str, Any]], None],
        connected: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.vault = vault
        self.emit = emit
        self.connected = connected
        self._active: dict[str, _Active] = {}
        self._busy: set[UUID] = set()
        """Recordings whose files this worker is using: recover leaves them alone."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="recording-raw")
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="recording-final")
        self.heap = HeapTrim()

    def __len__(self) -> int:
        return len(self._active)

    # ---- commands ------------------------------------------------------------------------

    async def start(
        self,
        call: str,
        recording_id: UUID,
        session: RelaySession,
        now: float,
        payload_types: Mapping[int, Codec] | None = None,
    ) -> None:
        """Record ``session`` from ``now`` as ``recording_id``; nothing if it already is.

        :param payload_types: dynamic RTP payload types the SDP bound to PCMU or PCMA.
        :raises RecordingError: the call is recorded under another id, the id is in use, or
            the data key or the raw file cannot be made.
        :raises ValueError: a payload type is not dynamic, or not bound to PCMU or PCMA.
        """
        active = self._active.get(call)
        if active is not None:
            if active.id != recording_id:
                raise RecordingError(f"call {call!r} is already recorded as {active.id}")
            return
        if recording_id in self._busy:
            raise RecordingError(f"recording {recording_id} is in use")
        recorder = StereoRecorder(now, payload_types=payload_types)
        active = _Active(recording_id, call, recorder, session)
        self._active[call] = active
        self._busy.add(recording_id)
        # Packets are buffered by the recorder from now on, while the raw file is opened.
        session.tap = active.recorder.packet
        try:
            writer = await asyncio.get_running_loop().run_in_executor(
                self._disk, self._open_raw, recording_id
            )
        except (VaultError, OSError) as exc:
            if self._active.get(call) is active:
                del self._active[call]
            session.tap = None
            self._busy.discard(recording_id)
            raise RecordingError(f"recording {recording_id}: {exc}") from None
        if self._active.get(call) is not active:  # stopped meanwhile (worker shutting down)
            with contextlib.suppress(RuntimeError):  # too late: the .part is for recover
                self._disk.submit(writer.close)
            return
        active.writer = writer

    def pause(self, call: str, now: float) -> None:
        """Mute the recording of ``call`` from ``now`` (PCI DSS: card numbers read out)."""
        self._recording(call).recorder.pause(now)

    def resume(self, call: str, now: float) -> None:
        self._recording(call).recorder.resume(now)

    def describe(self, call: str) -> dict[str, Any] | None:
        """The recording of ``call`` for a ``query`` reply, or None."""
        active = self._active.get(call)
        if active is None:
            return None
        return {
            "id": str(active.id),
            "paused": active.recorder.paused,
            "flushed_seconds": active.flushed_bytes / _FRAME_BYTES / RATE,
        }

    def stop(self, call: str, now: float) -> UUID | None:
        """End the recording of ``call`` at ``now`` (its relay is gone) and finalise it in the
        background; ``recording_ready`` or ``recording_failed`` follows.

        :returns: the recording's id, or None if the call was not recorded.
        """
        active = self._active.pop(call, None)
        if active is None:
            return None
        active.session.tap = None
        rest = active.recorder.finish(now)
        self._spawn(self._finalise(active, rest))
        return active.id

    async def recover(self) -> tuple[list[FinishedRecording], list[FailedRecording]]:
        """Finalise every raw file left by a worker that stopped (not this one's own)."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._finisher, _adopt_and_list, self.settings)
        # Filtered here, on the loop, after the listing: a recording started meanwhile
        # was marked busy before its file was created.
        mine = [recording_id for recording_id in found if recording_id not in self._busy]
        self._busy.update(mine)
        finished: list[FinishedRecording] = []
        failed: list[FailedRecording] = []
        try:
            for recording_id in mine:
                try:
                    final = await loop.run_in_executor(
                        self._finisher, self._recover_one, recording_id
                    )
                    if self._closing:
                        break  # nobody will read the reply: the next worker reports it
                    await loop.run_in_executor(self._disk, self._settle_raw, recording_id, final)
                except Exception as exc:  # any failure: reported to the controller, files kept
                    log.exception("recording %s: not recovered", recording_id)
                    failed.append({"recording": str(recording_id), "error": str(exc)})
                else:
                    finished.append(
                        _describe(
                            recording_id, final, interrupted=True, counters=None, truncated=None
                        )
                    )
        finally:
            self._busy.difference_update(mine)
        return finished, failed

    # ---- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Drain every recorder into its raw file once a second, until cancelled."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + _DRAIN_EVERY, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self.drain(loop.time())
            except Exception:  # a bug: keep draining the others rather than stop recording
                log.exception("draining the recorders failed")

    async def drain(self, now: float) -> None:
        """Write and flush what every recorder holds that is final by ``now``."""
        ready: list[_Active] = []
        batch: list[tuple[RecordingWriter, bytes]] = []
        # Pulled and handed to the raw thread without a pause: a stop coming after this
        # queues its close behind these writes.
        for active in self._active.values():
            if active.writer is not None:
                ready.append(active)
                batch.append((active.writer, active.recorder.pull(now)))
        if not batch:
            return
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._disk, _write_batch, batch)
        for active, result in zip(ready, results, strict=True):
            if isinstance(result, int):
                active.flushed_bytes = result
            elif self._active.get(active.call) is not active:
                continue
            elif isinstance(result, OSError):
                self._truncate(active, _cannot_write(result))
            else:
                self._fail(active, str(result) or type(result).__name__)

    async def close(self, now: float) -> None:
        """Stop: close every raw file as it stands (the next worker's ``recover`` finalises
        it) and leave the finalising under way to finish without deleting raw files."""
        self._closing = True
        closes = []
        for active in list(self._active.values()):
            del self._active[active.call]
            active.session.tap = None
            rest = active.recorder.finish(now)
            if active.writer is not None:
                closes.append(self._run_raw(_close_raw, active.writer, rest))
        for result in await asyncio.gather(*closes, return_exceptions=True):
            if isinstance(result, BaseException):
                log.error("a raw recording file could not be closed: %s", result)
        self._disk.shutdown(wait=False)
        self._finisher.shutdown(wait=False, cancel_futures=True)

    # ---- internals -----------------------------------------------------------------------

    def _recording(self, call: str) -> _Active:
        active = self._active.get(call)
        if active is None:
            raise RecordingError(f"call {call!r} is not being recorded")
        return active

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_raw(self, job: Callable[..., object], *args: Any) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._disk, job, *args)

    def _truncate(self, active: _Active, reason: str) -> None:
        """The raw file cannot be written any more: the recording ends here, and what is on
        disk is kept and finalised (``recording_ready`` with ``truncated``)."""
        log.error("recording %s of call %s truncated: %s", active.id, active.call, reason)
        del self._active[active.call]
        active.session.tap = None
        self._spawn(self._finalise(active, b"", truncated=reason))

    def _fail(self, active: _Active, error: str) -> None:
        """A raw write failed: the file is torn, so it is removed and the recording ends."""
        log.error("recording %s of call %s failed: %s", active.id, active.call, error)
        del self._active[active.call]
        active.session.tap = None
        if active.writer is not None:
            self._disk.submit(active.writer.abort)
        self._busy.discard(active.id)
        self.emit(
            {
                "event": "recording_failed",
                "call": active.call,
                "recording": str(active.id),
                "error": error,
            }
        )

    async def _finalise(self, active: _Active, rest: bytes, truncated: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            writer = active.writer
            assert writer is not None  # start() made it before any stop could come
            if truncated is None:
                try:
                    await loop.run_in_executor(self._disk, _close_raw, writer, rest)
                except OSError as exc:
                    truncated = _cannot_write(exc)
                    log.error("recording %s truncated at its end: %s", active.id, truncated)
            if truncated is not None:
                await loop.run_in_executor(self._disk, self._keep_written, writer)
            final = await loop.run_in_executor(self._finisher, self._final_or_kept, active.id)
            counters = asdict(active.recorder.counters)
            recording = _describe(
                active.id, final, interrupted=False, counters=counters, truncated=truncated
            )
            if self._closing or not self.connected():
                log.warning("recording %s: nobody to tell; left for recover", active.id)
                return
            await loop.run_in_executor(self._disk, self._settle_raw, active.id, final)
            self.emit({"event": "recording_ready", "call": active.call, "recording": recording})
        except Exception as exc:  # any failure: the controller must hear of every end
            log.exception("recording %s of call %s failed", active.id, active.call)
            self.emit(
                {
                    "event": "recording_failed",
                    "call": active.call,
                    "recording": str(active.id),
                    "error": str(exc) or type(exc).__name__,
                }
            )
        finally:
            self._busy.discard(active.id)

    def _raw_path(self, recording_id: UUID) -> Path:
        return self.settings.raw_streams / f"{recording_id}.raw"

    # In the threads:

    def _open_raw(self, recording_id: UUID) -> RecordingWriter:
        self.vault.create_key(recording_id)
        return self.vault.writer(recording_id, self._raw_path(recording_id))

    def _recover_one(self, recording_id: UUID) -> _FinalFile:
        raw = self._raw_path(recording_id)
        part = part_path_of(raw)
        if part.exists():
            self.vault.recover(recording_id, part, raw)
        return self._final_or_kept(recording_id)

    def _keep_written(self, writer: RecordingWriter) -> None:
        """After a failed write: keep the whole segments that reached the disk, sealed as a
        finished raw file (the torn end is cut off; this needs no new space)."""
        writer.abandon()
        if writer.part_path.exists():
            self.vault.recover(writer.recording_id, writer.part_path, writer.path)

    def _final_or_kept(self, recording_id: UUID) -> _FinalFile:
        """The final file; when the disk has no room for it, the raw stream kept as is."""
        try:
            try:
                return self._final_file(recording_id)
            except OSError as exc:
                if exc.errno not in _NO_ROOM:
                    raise
                log.error(
                    "recording %s: no room to encode it (%s); raw stream kept", recording_id, exc
                )
            return self._keep_raw(recording_id)
        finally:
            # The encode's buffers are free now: hand their pages back (see media/heap.py).
            self.heap.maybe()

    def _keep_raw(self, recording_id: UUID) -> _FinalFile:
        """The sealed raw stream as the final file, ``<id>.pcm`` (renamed by
        :meth:`_settle_raw`, just before the controller is told)."""
        with self.vault.reader(recording_id, self._raw_path(recording_id)) as source:
            pcm = source.read_all()
        return _FinalFile(
            f"{recording_id}.{KEPT_RAW}",
            KEPT_RAW,
            WAV_HEADER_BYTES + len(pcm),
            len(pcm) // _FRAME_BYTES,
            peaks(pcm, PEAK_BUCKETS),
        )

    def _settle_raw(self, recording_id: UUID, final: _FinalFile) -> None:
        """The final file is in place: the raw stream goes, or becomes the final file itself
        (a rename needs no space, and recover leaves ``.pcm`` files alone). Until this, a
        stopped worker's raw file is finalised again by the next worker's ``recover``."""
        raw = self._raw_path(recording_id)
        if final.format == KEPT_RAW:
            os.replace(raw, self.settings.recordings_dir / final.path)
            fsync_directory(self.settings.recordings_dir)
        else:
            raw.unlink()

    def _final_file(self, recording_id: UUID) -> _FinalFile:
        """Decrypt the raw stream, encode it, seal it as the final file (in memory only)."""
        with self.vault.reader(recording_id, self._raw_path(recording_id)) as source:
            pcm = source.read_all()
        # FLAC cannot hold zero frames (libsndfile writes no stream); an empty recording
        # (a worker killed in its first second) is kept as a valid empty WAV file instead.
        format = self.settings.format if pcm else "wav"
        data = encode(pcm, "flac" if format == "flac" else "wav")
        path = self.settings.recordings_dir / f"{recording_id}.{format}"
        # Left by a worker that died while writing it: ours to replace (the id is busy).
        part_path_of(path).unlink(missing_ok=True)
        with self.vault.writer(recording_id, path) as out:
            out.write(data)
        return _FinalFile(
            path.name, format, len(data), len(pcm) // _FRAME_BYTES, peaks(pcm, PEAK_BUCKETS)
        )


def _describe(
    recording_id: UUID,
    final: _FinalFile,
    *,
    interrupted: bool,
    counters: dict[str, Any] | None,
    truncated: str | None,
) -> FinishedRecording:
    return {
        "id": str(recording_id),
        "path": final.path,
        "format": final.format,
        "bytes": final.bytes,
        "duration_seconds": final.frames / RATE,
        "peaks": final.peaks,
        "interrupted": interrupted,
        "counters": counters,
        "truncated": truncated,
    }


def _cannot_write(exc: OSError) -> str:
    """Why a recording stops short, for its record."""
    if exc.errno in _NO_ROOM:
        return f"the recordings disk is full ({exc.strerror})"
    return f"the recording could not be written ({exc.strerror or exc})"


def _write_batch(batch: list[tuple[RecordingWriter, bytes]]) -> list[int | Exception]:
    """Per writer: the plaintext bytes now durable, or why the write failed."""
    results: list[int | Exception] = []
    for writer, pcm in batch:
        try:
            writer.write(pcm)
            writer.flush()
        except (OSError, VaultError, ValueError) as exc:
            results.append(exc)
        else:
            results.append(writer.plaintext_bytes)
    return results


def _close_raw(writer: RecordingWriter, rest: bytes) -> None:
    writer.write(rest)
    writer.close()


def _adopt_and_list(settings: RecordingSettings) -> list[UUID]:
    """Move the leftovers of the adopted directories into ours; then list ours."""
    moved = False
    for directory in settings.adopt:
        for name in _raw_names(directory):
            os.replace(directory / name, settings.raw_streams / name)
            moved = True
    if moved:
        fsync_directory(settings.raw_streams)
    found = set()
    for name in _raw_names(settings.raw_streams):
        found.add(UUID(name.partition(".")[0]))
    return sorted(found, key=str)


def raw_directory(recordings_dir: Path, worker: int) -> Path:
    """Where worker number ``worker`` keeps its raw streams."""
    return recordings_dir / "raw" / f"worker-{worker}"


def orphaned_raw_directories(recordings_dir: Path, workers: int) -> tuple[Path, ...]:
    """The raw directories under ``recordings_dir`` that none of ``workers`` workers owns: the
    recordings directory itself (raw streams before there were several workers) and those of
    workers numbered ``workers`` and up (a server that ran with more)."""
    owned = {raw_directory(recordings_dir, worker).name for worker in range(workers)}
    parent = raw_directory(recordings_dir, 0).parent
    others = sorted(p for p in parent.glob("worker-*") if p.name not in owned and p.is_dir())
    return (recordings_dir, *others)


def _raw_names(directory: Path) -> list[str]:
    """Names of raw streams (whole or not) in ``directory``: ``<uuid>.raw[.part]``."""
    names = []
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return []
    with entries:
        for entry in entries:
            stem, dot, rest = entry.name.partition(".")
            if not dot or rest not in ("raw", "raw.part"):
                continue
            try:
                recording_id = UUID(stem)
            except ValueError:
                continue
            if str(recording_id) == stem:
                names.append(entry.name)
    return names
