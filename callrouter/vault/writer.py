"""Writing a recording file: streaming, durable on flush, atomic on close; and recovery.

Sealed bytes go to ``<path>.part`` and only a finished file (its final segment written and
fsynced) is renamed to ``path``, so a file under its real name is always whole. Plaintext lives
in memory only: less than one segment of it, between two writes.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType

from callrouter.vault.durable import fsync_directory, write_all
from callrouter.vault.errors import (
    NoDataKey,
    TamperedSegment,
    UnfinishedFileExists,
    WrongRecording,
)
from callrouter.vault.keystore import DataKey
from callrouter.vault.stream import (
    DEFAULT_SEGMENT_BYTES,
    HEADER_SIZE,
    MAGIC,
    NONCE_PREFIX_BYTES,
    TAG_BYTES,
    Bytes,
    Header,
    Layout,
    SegmentCipher,
    StreamSealer,
)

__all__ = ["RecordingWriter", "part_path_of", "recover"]


def part_path_of(path: Path) -> Path:
    """Where a write to ``path`` goes until it is finished: ``<path>.part``."""
    return path.with_name(path.name + ".part")


def _new_header(key: DataKey, segment_bytes: int) -> Header:
    return Header(
        key.recording_id, key.key_id, secrets.token_bytes(NONCE_PREFIX_BYTES), segment_bytes
    )


class RecordingWriter:
    """Encrypts one file of a recording as it is written.

    ``write`` seals and writes each segment as soon as it is full; ``flush`` makes everything
    written so far durable except the partial segment still in memory (under one segment: about
    a second of 8 kHz 16-bit audio at the default 16 KiB); ``close`` seals the rest as the final
    segment and moves the file into place. Used as a context manager, it closes on success and
    aborts on an exception.
    """

    def __init__(
        self, key: DataKey, path: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        """:param key: the recording's data key.
        :param path: where the finished file goes (its directory must exist).
        :param segment_bytes: plaintext bytes per segment.
        :raises UnfinishedFileExists: ``<path>.part`` is left from an interrupted write.
        """
        self.path = path
        self.part_path = part_path_of(path)
        self.recording_id = key.recording_id
        self._sealer = StreamSealer(key.key, _new_header(key, segment_bytes))
        try:
            self._fd = os.open(
                self.part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except FileExistsError:
            raise UnfinishedFileExists(self.part_path) from None
        self._open = True
        self._entry_durable = False
        try:
            write_all(self._fd, self._sealer.header_bytes)
        except BaseException:
            self.abort()
            raise

    @property
    def plaintext_bytes(self) -> int:
        """Plaintext written so far."""
        return self._sealer.plaintext_bytes

    def write(self, data: Bytes) -> None:
        """Encrypt ``data`` and write the segments it completes."""
        if not self._open:
            raise ValueError(f"{self.path}: the writer is closed")
        sealed = self._sealer.update(data)
        if sealed:
            write_all(self._fd, sealed)

    def flush(self) -> None:
        """Make every full segment written so far durable (fsync)."""
        self._check_open()
        os.fsync(self._fd)
        if not self._entry_durable:
            # Without this a crash could lose the .part file's name, and so all of it.
            fsync_directory(self.part_path.parent)
            self._entry_durable = True

    def close(self) -> int:
        """Write the final segment, fsync, rename to ``path`` and fsync the directory.

        If this fails the ``.part`` file stays for :func:`recover`.

        :returns: the plaintext size of the file.
        """
        self._check_open()
        self._open = False
        try:
            write_all(self._fd, self._sealer.finish())
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        os.replace(self.part_path, self.path)
        fsync_directory(self.path.parent)
        return self._sealer.plaintext_bytes

    def abort(self) -> None:
        """Stop and delete the unfinished file (nothing happens if already closed)."""
        if self._open:
            self._open = False
            os.close(self._fd)
            self.part_path.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Stop without finishing, keeping the ``.part`` file for :func:`recover`: after a
        failed write (a full disk) the last segment may be torn, and sealing a final segment
        after it would make a file that never authenticates."""
        if self._open:
            self._open = False
            os.close(self._fd)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError(f"{self.path}: the writer is closed")


def recover(
    key: DataKey, part_path: Path, path: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES
) -> int:
    """Finish the interrupted write ``part_path`` with what was written, and rename it to ``path``.

    Complete segments that authenticate are kept, in order, up to the first that does not (a
    torn write after a crash can leave a full-length segment of zeros); the rest is dropped.
    A file whose final segment was already written whole (the crash came between the last
    fsync and the rename) is kept as it is.

    The last kept segment is sealed again as the final one, rather than an empty final segment
    appended after it: the interrupted writer may have been writing that very final segment,
    and sealing different plaintext under its nonce would reuse a GCM nonce. The nonce
    (prefix, k-1, last) is one the writer never used, since segment k-1 was written non-final.
    With nothing to keep, the file restarts under a fresh nonce prefix, with an empty final
    segment.

    :param segment_bytes: the segment size for a file restarted from nothing.
    :returns: the plaintext bytes kept.
    :raises NotARecordingFile: ``part_path`` is not a recording file.
    :raises WrongRecording: it belongs to another recording.
    :raises NoDataKey: it was sealed with another data key than ``key``.
    """
    fd = os.open(part_path, os.O_RDWR | os.O_CLOEXEC)
    try:
        kept = _finish(fd, key, part_path, segment_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part_path, path)
    fsync_directory(path.parent)
    if part_path.parent != path.parent:
        fsync_directory(part_path.parent)
    return kept


def _finish(fd: int, key: DataKey, part_path: Path, segment_bytes: int) -> int:
    size = os.fstat(fd).st_size
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) < HEADER_SIZE and MAGIC.startswith(head[: len(MAGIC)]):
        # The crash came before the header was whole: nothing to keep.
        _rewrite(fd, 0, _empty_file(key, segment_bytes))
        return 0
    header = Header.parse(head, part_path)
    if header.recording_id != key.recording_id:
        raise WrongRecording(part_path, header.recording_id, key.recording_id)
    if header.key_id != key.key_id:
        raise NoDataKey(key.recording_id, f"{part_path} was sealed with another data key")
    cipher = SegmentCipher(key.key, header)
    layout = Layout(header.segment_bytes)
    index = 0
    plaintext = b""
    while True:
        offset = layout.offset(index)
        sealed = os.pread(fd, layout.sealed_bytes, offset)
        if len(sealed) >= TAG_BYTES and offset + len(sealed) == size:
            try:
                cipher.open(index, sealed, last=True)
            except TamperedSegment:
                pass  # not a whole final segment: an interrupted one, or a non-final one
            else:
                return size - HEADER_SIZE - (index + 1) * TAG_BYTES
        if len(sealed) < layout.sealed_bytes:
            break
        try:
            plaintext = cipher.open(index, sealed, last=False)
        except TamperedSegment:
            break
        index += 1
    if index == 0:
        _rewrite(fd, 0, _empty_file(key, header.segment_bytes))
        return 0
    _rewrite(fd, layout.offset(index - 1), cipher.seal(index - 1, plaintext, last=True))
    return index * header.segment_bytes


def _empty_file(key: DataKey, segment_bytes: int) -> bytes:
    sealer = StreamSealer(key.key, _new_header(key, segment_bytes))
    return sealer.header_bytes + sealer.finish()


def _rewrite(fd: int, offset: int, data: bytes) -> None:
    """Cut the file at ``offset`` and write ``data`` there."""
    os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    write_all(fd, data)
