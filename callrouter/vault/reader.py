"""Reading a recording file: its size without decrypting, all of it, or any byte range."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from uuid import UUID

from callrouter.vault.errors import NoDataKey, TamperedSegment, TruncatedFile, WrongRecording
from callrouter.vault.keystore import DataKey
from callrouter.vault.stream import HEADER_SIZE, Header, Layout, SegmentCipher

__all__ = ["RecordingReader"]


class RecordingReader:
    """Decrypts one recording file, a segment at a time, on demand.

    Opening checks the header and authenticates the final segment, so :attr:`plaintext_size`
    is known to be the size written, not just what the file's length suggests. Each segment read
    afterwards is authenticated before any of its bytes are returned.
    """

    path: Path
    """The file."""
    recording_id: UUID
    """The recording it belongs to."""
    header: Header
    """Its header."""
    segment_count: int
    """Segments in the file, the final one included."""
    plaintext_size: int
    """Plaintext bytes in the file (from its length; the final segment vouches for it)."""

    def __init__(self, path: Path, recording_id: UUID, data_key: Callable[[UUID], DataKey]) -> None:
        """:param path: the recording file.
        :param recording_id: the recording it must belong to.
        :param data_key: gives the recording's data key (asked only once the header matches).
        :raises NotARecordingFile: bad magic, unknown version, short header.
        :raises WrongRecording: the file belongs to another recording.
        :raises NoDataKey: the data key is gone, or is not the one that sealed the file.
        :raises TruncatedFile: the file ends without its final segment.
        :raises TamperedSegment: the final segment fails authentication.
        """
        self.path = path
        self.recording_id = recording_id
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._size = os.fstat(self._fd).st_size
            self.header = Header.parse(os.pread(self._fd, HEADER_SIZE, 0), path)
            if self.header.recording_id != recording_id:
                raise WrongRecording(path, self.header.recording_id, recording_id)
            key = data_key(recording_id)
            if key.key_id != self.header.key_id:
                raise NoDataKey(
                    recording_id,
                    f"{path} was sealed with data key {self.header.key_id.hex()}, but the "
                    f"recording's key is {key.key_id.hex()} (the file was tampered with, or "
                    "its key was shredded and made anew)",
                )
            self._cipher = SegmentCipher(key.key, self.header)
            self._layout = Layout(self.header.segment_bytes)
            self.segment_count = self._layout.segment_count(self._size, recording_id)
            self.plaintext_size = self._layout.plaintext_size(self._size, recording_id)
            self._final = self._open_final()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def segment_bytes(self) -> int:
        """Plaintext bytes per segment."""
        return self.header.segment_bytes

    def __iter__(self) -> Iterator[bytes]:
        """The plaintext, one segment at a time."""
        for index in range(self.segment_count):
            plaintext = self._segment(index)
            if plaintext:
                yield plaintext

    def read_all(self) -> bytes:
        """The whole plaintext."""
        return b"".join(self)

    def read_range(self, start: int, end: int) -> bytes:
        """Plaintext bytes ``start`` to ``end`` (exclusive), decrypting only their segments.

        Like a slice, a range reaching past the end stops at the end.

        :raises ValueError: ``start`` is negative or after ``end``.
        """
        if start < 0 or end < start:
            raise ValueError(f"byte range {start}-{end} is not 0 <= start <= end")
        end = min(end, self.plaintext_size)
        if start >= end:
            return b""
        size = self.header.segment_bytes
        first, last = start // size, (end - 1) // size
        joined = b"".join(self._segment(index) for index in range(first, last + 1))
        skip = start - first * size
        return joined[skip : skip + end - start]

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _sealed(self, index: int) -> bytes:
        offset = self._layout.offset(index)
        length = min(self._layout.sealed_bytes, self._size - offset)
        sealed = os.pread(self._fd, length, offset)
        if len(sealed) != length:
            # The file shrank under us since it was opened.
            raise TruncatedFile(self.recording_id, index)
        return sealed

    def _segment(self, index: int) -> bytes:
        if index == self.segment_count - 1:
            return self._final
        return self._cipher.open(index, self._sealed(index), last=False)

    def _open_final(self) -> bytes:
        index = self.segment_count - 1
        sealed = self._sealed(index)
        try:
            return self._cipher.open(index, sealed, last=True)
        except TamperedSegment:
            # A whole segment that opens as a non-final one: the real final one was cut off.
            if len(sealed) == self._layout.sealed_bytes:
                try:
                    self._cipher.open(index, sealed, last=False)
                except TamperedSegment:
                    pass
                else:
                    raise TruncatedFile(self.recording_id, index + 1) from None
            raise
