"""What privacy needs of the recordings service: shredding deleted recordings, reading audio.

The recordings service (``callrouter/recordings``) implements this; privacy code never opens a
recording file or a key itself. Deleting a ``recordings`` row queues the recording in
``recording_disposals`` (migration 0007's trigger), in the same transaction as the erasure, so
a crash between the commit and the shredding loses nothing: the queue is still there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol
from uuid import UUID

__all__ = ["RecordingArchive"]


class RecordingArchive(Protocol):
    """Encrypted recordings at rest, as privacy requests need them."""

    async def dispose_pending(self) -> int:
        """Destroy the wrapped data key and the file of every recording queued in
        ``recording_disposals`` (their rows are already deleted and committed), then remove
        their queue rows; how many were destroyed. Idempotent: a recording whose key or file
        is already gone counts as destroyed."""
        ...

    def audio(self, recording_id: UUID, path: str) -> AsyncIterator[bytes]:
        """The decrypted audio file (the FLAC or WAV bytes a download would give), in chunks,
        without holding the whole file in memory.

        :param path: the row's ``path``, relative to ``recordings_dir``.
        """
        ...
