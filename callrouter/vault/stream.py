"""The recording file format: a header and a stream of AES-256-GCM segments (sans-IO).

Rules of this file: nothing here touches a file or a clock; it turns plaintext into the bytes of
a file and back, and computes where things are.

The construction is the STREAM online AEAD of Hoang, Reyhanitabar, Rogaway and Vizár ("Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as Tink's
streaming AEAD uses it::

    file    = header || segment_0 || ... || segment_n        (segment_n is the final one)
    header  = magic(8) || version(1) || recording_id(16) || key_id(16) || nonce_prefix(7)
              || segment_bytes(4, big-endian)                                  = 52 bytes
    segment = AES-256-GCM(data key, nonce_i, plaintext_i, associated data = header)
              = ciphertext_i || tag(16)
    nonce_i = nonce_prefix(7) || i (4, big-endian) || last(1: 0x01 for segment_n, else 0x00)

Every segment but the final one holds exactly ``segment_bytes`` of plaintext; the final one holds
0 to ``segment_bytes``. The index in the nonce detects reordering and swapping, the last flag
detects truncation at a segment boundary, and the header as associated data binds every segment
to its file (recording, data key, nonce prefix, segment size).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callrouter.vault.errors import NotARecordingFile, TamperedSegment, TruncatedFile

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "HEADER_SIZE",
    "KEY_ID_BYTES",
    "MAGIC",
    "MAX_SEGMENT_BYTES",
    "NONCE_PREFIX_BYTES",
    "TAG_BYTES",
    "VERSION",
    "Bytes",
    "Header",
    "Layout",
    "SegmentCipher",
    "StreamSealer",
]

Bytes = bytes | bytearray | memoryview

# PNG's trick: a high-bit first byte and CR LF / ^Z / LF catch text-mode and 7-bit mangling.
MAGIC = b"\x89CRV\r\n\x1a\n"
VERSION = 1
KEY_ID_BYTES = 16
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
DEFAULT_SEGMENT_BYTES = 16384
# A segment is held in memory whole; 16 MiB is far above any useful size for audio.
MAX_SEGMENT_BYTES = 1 << 24
# The index takes 4 bytes of the nonce.
MAX_SEGMENTS = 1 << 32

_HEADER = struct.Struct(f">8sB16s{KEY_ID_BYTES}s{NONCE_PREFIX_BYTES}sI")
HEADER_SIZE = _HEADER.size
_NONCE_TAIL = struct.Struct(">IB")


@dataclass(frozen=True)
class Header:
    """The authenticated header at the start of every recording file."""

    recording_id: UUID
    """The recording whose data key seals the file."""
    key_id: bytes
    """Which data key of the recording sealed the file (a shredded and re-created key differs)."""
    nonce_prefix: bytes
    """Random per file, so the files sealed with one data key never share a nonce."""
    segment_bytes: int
    """Plaintext bytes in every segment but the final one."""

    def pack(self) -> bytes:
        """The header's :data:`HEADER_SIZE` bytes."""
        return _HEADER.pack(
            MAGIC,
            VERSION,
            self.recording_id.bytes,
            self.key_id,
            self.nonce_prefix,
            self.segment_bytes,
        )

    @classmethod
    def parse(cls, data: bytes, path: Path) -> Header:
        """Read the header from the first bytes of a file.

        :param data: the first :data:`HEADER_SIZE` bytes of the file (fewer if it is shorter).
        :param path: the file, for error messages.
        :raises NotARecordingFile: bad magic, an unknown version, a short file or an impossible
            segment size.
        """
        if len(data) < len(MAGIC) or not data.startswith(MAGIC):
            raise NotARecordingFile(path, "bad magic")
        if len(data) < HEADER_SIZE:
            raise NotARecordingFile(path, f"header cut short at {len(data)} bytes")
        _magic, version, recording, key_id, prefix, segment_bytes = _HEADER.unpack_from(data)
        if version != VERSION:
            raise NotARecordingFile(path, f"format version {version}; this reads {VERSION}")
        if not 1 <= segment_bytes <= MAX_SEGMENT_BYTES:
            raise NotARecordingFile(path, f"impossible segment size {segment_bytes}")
        return cls(UUID(bytes=recording), key_id, prefix, segment_bytes)


@dataclass(frozen=True)
class Layout:
    """Where the segments are in a file of a given segment size."""

    segment_bytes: int

    @property
    def sealed_bytes(self) -> int:
        """Bytes on disk of a full segment."""
        return self.segment_bytes + TAG_BYTES

    def offset(self, index: int) -> int:
        """Where segment ``index`` starts in the file."""
        return HEADER_SIZE + index * self.sealed_bytes

    def segment_count(self, file_size: int, recording_id: UUID) -> int:
        """How many segments, the final one included, a file of ``file_size`` bytes holds.

        :raises TruncatedFile: the bytes after the last full segment cannot be a final segment.
        """
        full, rest = divmod(file_size - HEADER_SIZE, self.sealed_bytes)
        if rest == 0 and full == 0:
            raise TruncatedFile(recording_id, 0)
        if rest == 0:
            return full
        if rest < TAG_BYTES:
            raise TruncatedFile(recording_id, full)
        return full + 1

    def plaintext_size(self, file_size: int, recording_id: UUID) -> int:
        """Plaintext bytes in a file of ``file_size`` bytes, computed without decrypting."""
        count = self.segment_count(file_size, recording_id)
        return file_size - HEADER_SIZE - count * TAG_BYTES


class SegmentCipher:
    """Seals and opens the segments of one file: one data key, one header."""

    def __init__(self, key: bytes, header: Header) -> None:
        """:param key: the recording's 256-bit data key.
        :param header: the file's header (its bytes are every segment's associated data)."""
        self.header = header
        self._aead = AESGCM(key)
        self._associated = header.pack()
        self._prefix = header.nonce_prefix

    def nonce(self, index: int, *, last: bool) -> bytes:
        """The nonce of segment ``index``: prefix, big-endian index, last flag."""
        if not 0 <= index < MAX_SEGMENTS:
            raise ValueError(f"segment index {index} outside the 32-bit nonce counter")
        return self._prefix + _NONCE_TAIL.pack(index, 1 if last else 0)

    def seal(self, index: int, plaintext: Bytes, *, last: bool) -> bytes:
        """Ciphertext and tag of segment ``index``."""
        return self._aead.encrypt(self.nonce(index, last=last), plaintext, self._associated)

    def open(self, index: int, sealed: Bytes, *, last: bool) -> bytes:
        """Plaintext of segment ``index``.

        :raises TamperedSegment: the segment is not the ``index``-th (final, when ``last``)
            segment of this file as sealed.
        """
        try:
            return self._aead.decrypt(self.nonce(index, last=last), sealed, self._associated)
        except InvalidTag:
            raise TamperedSegment(self.header.recording_id, index, final=last) from None


class StreamSealer:
    """Turns plaintext given in pieces of any size into the bytes of a file, in order.

    Full segments come out as soon as they fill (so they can be made durable at once); the
    remainder waits in memory for more data or for :meth:`finish`, which seals it as the final
    segment (empty when the plaintext filled its last segment exactly).
    """

    def __init__(self, key: bytes, header: Header) -> None:
        """:param key: the recording's 256-bit data key.
        :param header: the file's header, with a nonce prefix never used before with ``key``."""
        self._cipher = SegmentCipher(key, header)
        self._segment_bytes = header.segment_bytes
        self._pending = bytearray()
        self._index = 0
        self._finished = False
        self.header_bytes = header.pack()
        """The file's first bytes."""
        self.plaintext_bytes = 0
        """Plaintext taken so far."""

    def update(self, data: Bytes) -> bytes:
        """Take plaintext; return the sealed full segments it completes (maybe none)."""
        if self._finished:
            raise ValueError("the stream is finished")
        view = memoryview(data).cast("B")
        self.plaintext_bytes += len(view)
        size = self._segment_bytes
        if len(self._pending) + len(view) < size:
            # The common case (one RTP packet of audio at a time): no segment completes.
            self._pending += view
            return b""
        sealed: list[bytes] = []
        if self._pending:
            taken = size - len(self._pending)
            self._pending += view[:taken]
            view = view[taken:]
            sealed.append(self._seal(self._pending, last=False))
            self._pending.clear()
        # Whole segments straight from the caller's buffer: no copy into _pending.
        while len(view) >= size:
            sealed.append(self._seal(view[:size], last=False))
            view = view[size:]
        self._pending += view
        return b"".join(sealed)

    def finish(self) -> bytes:
        """Seal what is pending as the final segment and return it."""
        if self._finished:
            raise ValueError("the stream is finished")
        self._finished = True
        final = self._seal(self._pending, last=True)
        self._pending.clear()
        return final

    def _seal(self, plaintext: Bytes, *, last: bool) -> bytes:
        sealed = self._cipher.seal(self._index, plaintext, last=last)
        self._index += 1
        return sealed
