"""The media worker's heap trim: freed holes in the C heap go back to the kernel, rate-limited."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from callrouter.media.heap import HeapTrim

# Leaves ~75 MiB of free holes in the C heap between blocks still in use (every 16th 4 KiB
# block kept), the pattern finalising recordings leaves, then trims once. Private dirty
# memory is read from the kernel before and after. In its own process, so nothing else
# allocates in between.
HOLES = textwrap.dedent(
    """
    import ctypes, json
    from pathlib import Path
    from callrouter.media.heap import HeapTrim

    def private_dirty_kib():
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(20_000)]
    for address in blocks:
        ctypes.memset(address, 1, 4096)
    for index, address in enumerate(blocks):
        if index % 16:
            libc.free(address)
    before = private_dirty_kib()
    trimmed = HeapTrim().maybe()
    after = private_dirty_kib()
    print(json.dumps({"before": before, "after": after, "trimmed": trimmed}))
    """
)


def test_freed_holes_go_back_to_the_kernel() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HOLES], capture_output=True, text=True, check=True, timeout=60
    )
    figures = json.loads(out.stdout)
    assert figures["trimmed"] is True
    # 18,750 blocks of 4 KiB freed (73 MiB); at least half of it must leave the process.
    assert figures["before"] - figures["after"] > 36 * 1024, figures


def test_at_most_once_per_interval() -> None:
    now = [100.0]
    heap = HeapTrim(interval=5.0, clock=lambda: now[0])
    assert heap.maybe() is True
    now[0] = 104.9
    assert heap.maybe() is False
    now[0] = 105.0
    assert heap.maybe() is True
    assert heap.trims == 2
