"""Give the C heap's freed memory back to the kernel after recordings are finalised.

Finalising a recording (decrypt the raw stream, encode FLAC, seal) makes large short-lived
buffers in the finisher thread. glibc keeps what they leave free inside its arenas instead of
returning it, as holes between blocks still in use, so the worker's private memory rose about
9 MiB an hour in the soak with no object kept alive (``bench/media_memory.py``: "free but
kept" grew, "in use" did not). ``malloc_trim(0)`` walks every arena and hands whole free pages
back with ``madvise``, which is what levels it off. It costs a walk of the heap (0.5 ms with
nothing to give back, 10 ms handing back 45 MiB of holes, measured here) with the GIL released,
so it runs at most once per ``interval`` seconds, in the finisher thread, never on the worker's
loop.

On a C library without ``malloc_trim`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

TRIM_INTERVAL_SECONDS = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class HeapTrim:
    """Calls ``malloc_trim(0)`` at most once per ``interval`` seconds, from any thread."""

    def __init__(
        self,
        interval: float = TRIM_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.trims = 0
        self._trim = _malloc_trim()
        self._last: float | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe(self) -> bool:
        """Trim when the last trim is ``interval`` old or more; whether it trimmed."""
        if self._trim is None:
            return False
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
        self._trim(0)
        self.trims += 1
        return True
