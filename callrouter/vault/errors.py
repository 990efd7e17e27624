"""What can go wrong with encrypted recordings, each with the message an operator needs.

Every error is a :class:`VaultError`, so a caller (the API, the media worker, the CLI) catches one
class and shows the message; the subclasses say what to do about it (a 404 for a shredded key, a
500 and an alert for a tampered file).
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

__all__ = [
    "KeyRingError",
    "KeyStoreError",
    "NoDataKey",
    "NotARecordingFile",
    "TamperedSegment",
    "TruncatedFile",
    "UnfinishedFileExists",
    "VaultError",
    "WrongRecording",
]


class VaultError(Exception):
    """Base of every vault error."""


class KeyRingError(VaultError):
    """The key ring of key-encryption keys is missing, too open, malformed or lacks a key."""


class KeyStoreError(VaultError):
    """A wrapped data key in the key store is malformed or fails authentication."""


class NoDataKey(VaultError):
    """A recording has no data key (shredded or never created), or not the one a file needs."""

    def __init__(
        self, recording_id: UUID, detail: str = "no data key (shredded or never created)"
    ) -> None:
        super().__init__(f"recording {recording_id}: {detail}")
        self.recording_id = recording_id


class NotARecordingFile(VaultError):
    """The file is not a callrouter recording file, or of a format version we do not read."""

    def __init__(self, path: Path, detail: str = "bad magic") -> None:
        super().__init__(f"{path}: not a callrouter recording file ({detail})")
        self.path = path


class WrongRecording(VaultError):
    """The file is a recording file, but of another recording than the one asked for."""

    def __init__(self, path: Path, found: UUID, expected: UUID) -> None:
        super().__init__(f"{path}: file belongs to recording {found}, not {expected}")
        self.path = path
        self.found = found
        self.expected = expected


class TamperedSegment(VaultError):
    """A segment failed authentication: its bytes, its place or the header were changed."""

    def __init__(self, recording_id: UUID, index: int, *, final: bool = False) -> None:
        why = "as the final segment (tampered or truncated)" if final else "(tampered or reordered)"
        super().__init__(f"recording {recording_id}: segment {index} failed authentication {why}")
        self.recording_id = recording_id
        self.index = index


class TruncatedFile(VaultError):
    """The file ends without its final segment: it was cut, or its write never finished."""

    def __init__(self, recording_id: UUID, segments: int) -> None:
        where = f"after segment {segments - 1}" if segments else "before its first segment"
        super().__init__(f"recording {recording_id}: truncated {where} (no final segment)")
        self.recording_id = recording_id
        self.segments = segments


class UnfinishedFileExists(VaultError):
    """A ``.part`` file of an interrupted write is in the way of a new write."""

    def __init__(self, part_path: Path) -> None:
        super().__init__(
            f"{part_path}: an interrupted write is still there; finalise it with "
            "Vault.recover() or remove it before writing again"
        )
        self.part_path = part_path
