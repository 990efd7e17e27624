"""Serve's collector: full collections rare, but still made (cycles are not kept for ever)."""

from __future__ import annotations

import json
import subprocess
import sys

from callrouter.garbage_collection import FULL_COLLECTION_EVERY

# Run in a child: the settings are process-wide and would change every later test's collector.
_CHILD = """
import gc, json
from collections import deque
from callrouter.garbage_collection import settle_for_traffic

built_at_start = [[] for _ in range(10_000)]
settle_for_traffic()
seen = {0: 0, 1: 0, 2: 0}
middle_before_full = None

def count(phase, info):
    global middle_before_full
    if phase == "stop":
        seen[info["generation"]] += 1
        if info["generation"] == 2 and middle_before_full is None:
            middle_before_full = seen[1]

gc.callbacks.append(count)
# Objects made in bursts that live a while and die in bursts, as a call's messages and
# transactions do; bounded at far more rounds than the full collection needs.
living = deque(maxlen=50)
for _ in range(100_000):
    living.append([[n] for n in range(1000)])
    if middle_before_full is not None:
        break
gc.callbacks.remove(count)
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "middle_before_full": middle_before_full, "young": seen[0]}))
"""


def test_full_collections_come_a_thousand_middle_ones_apart_and_still_come() -> None:
    defaults = json.loads(
        subprocess.run(
            [sys.executable, "-c", "import gc, json; print(json.dumps(gc.get_threshold()))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], check=True, capture_output=True, text=True, timeout=300
    )
    got = json.loads(out.stdout)
    assert got["frozen"] >= 10_000  # what start-up built is never walked again
    assert got["threshold"] == [defaults[0], defaults[1], FULL_COLLECTION_EVERY]
    # Python's default would have run one after about 10 middle collections.
    assert got["middle_before_full"] is not None, "no full collection at all: cycles kept"
    assert got["middle_before_full"] >= FULL_COLLECTION_EVERY
