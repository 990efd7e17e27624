"""Free space on the recordings filesystem, and whether new calls may start recording.

A full disk in the middle of a call keeps what was written (the media worker finalises a
truncated recording), but a server that keeps starting recordings on a nearly full disk only
makes more of them. Below ``[media] min_free_bytes`` new calls are connected unrecorded, with the
reason on their record, until space comes back; health and readiness report the state.

The figure is refreshed in the background (statvfs(3) runs in an executor: on a network file
system it can block), so the call path only reads a number.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["RecordingSpace", "SpaceStatus"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024

SpaceStatus = Literal["ok", "low", "unknown"]


@dataclass
class RecordingSpace:
    """The recordings filesystem's free space against its floor.

    :param path: the recordings directory.
    :param min_free_bytes: below this, new calls are not recorded (0: never refuse).
    :param announce: where a line goes when the state changes (low, or ok again).
    """

    path: Path
    min_free_bytes: int
    announce: Callable[[str], None] = log.warning
    free_bytes: int | None = None
    """Free bytes (for an unprivileged process) at the last check; None before one, or when
    the directory cannot be checked."""
    error: str | None = None
    _announced: SpaceStatus | None = field(default=None, init=False)

    def check(self) -> None:
        """Measure now (blocking: a syscall on the file system)."""
        try:
            stat = os.statvfs(self.path)
        except OSError as exc:
            self.free_bytes, self.error = None, f"{self.path}: {exc.strerror}"
        else:
            self.free_bytes, self.error = stat.f_bavail * stat.f_frsize, None
        if self.status != self._announced:
            self._announced = self.status
            self.announce(f"media: recording space {self.status}: {self.describe()}")

    async def run(self, every: float = 1.0) -> None:
        """Measure every ``every`` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, self.check)
            await asyncio.sleep(every)

    @property
    def status(self) -> SpaceStatus:
        if self.free_bytes is None:
            return "unknown"
        return "low" if self.free_bytes < self.min_free_bytes else "ok"

    def refusal(self) -> str | None:
        """Why a new call may not be recorded now, or None. An unknown figure refuses too: a
        recordings directory that cannot be checked cannot be written either."""
        if self.status == "ok":
            return None
        return f"not enough space for recordings: {self.describe()}"

    def describe(self) -> str:
        if self.free_bytes is None:
            return self.error or "not measured yet"
        return (
            f"{self.free_bytes / _MIB:.1f} MiB free on {self.path}, "
            f"media.min_free_bytes is {self.min_free_bytes / _MIB:.1f} MiB"
        )

    def view(self) -> dict[str, Any]:
        """For health and readiness."""
        return {
            "status": self.status,
            "free_bytes": self.free_bytes,
            "min_free_bytes": self.min_free_bytes,
        }
