"""The server's heartbeat: the last moment it was known alive, kept in a file on local disk.

After a crash or kill, this node's calls left open in the database are closed as interrupted
at the last heartbeat (the crash, give or take one interval), not at the time of the next
start. A file, not only a row: the heartbeat must go on while the database is away. (The
node's row in ``nodes``, written by callrouter.cluster, is what the other nodes go by.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


class Heartbeat:
    """:param path: the file; written whole each beat (temporary file, then rename)."""

    def __init__(
        self, path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.path = path
        self._clock = clock

    def last(self) -> datetime | None:
        """When the previous run was last alive (None: no heartbeat was ever written)."""
        try:
            return datetime.fromisoformat(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def beat(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(self._clock().isoformat())
        os.replace(temporary, self.path)

    async def run(self, interval: float) -> None:
        """Beat every ``interval`` seconds until cancelled; a beat that cannot be written (a
        full disk) is tried again at the next one."""
        while True:
            with contextlib.suppress(OSError):
                self.beat()
            await asyncio.sleep(interval)
