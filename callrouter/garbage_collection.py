"""How serve's cyclic garbage collector is set once it is ready to take calls.

Measured at 200 calls/s (1 s calls, `bench/sip_calls.sh`'s harness, a probe of `gc.callbacks`):
- Serve holds some 430,000 objects the collector tracks, almost all of them transactions that
  wait out RFC 3261's timers (J, L, M: 32 s over UDP) with their messages.
- Python's defaults ran a full collection every 2-3 s, walking all of them: 10 in a 27 s run,
  200-450 ms each on the shared 2 cores. That was the post-dial delay's p99 (144-512 ms) and
  about a fifth of serve's CPU per call.
- Those 10 full collections found 25 objects of cyclic garbage in all: a call's objects are
  freed by their reference counts when the call and its transactions end.

So full collections are made rare rather than cheap: one per 1,000 collections of the middle
generation instead of 10 (every few minutes at 200 calls/s, less often when idle). The
young collections, which take what short-lived cycles there are, keep their defaults. What
cyclic garbage old objects leave is bounded by that count, not left for ever. With this the
run above had no full collection and a post-dial delay p99 of 40 ms.

Since then a transaction waiting out its timers keeps bytes, not its parsed messages
(callrouter/sip/transactions.py): at 200 calls/s serve tracks ~106,000 objects instead of
~622,000, and a forced full collection took 102 ms instead of 583. And an answered call up
holds 27 tracked objects instead of 61 (its INVITEs' parses let go at the ACK, its timers one
tuple each: routing/call_timers.py), so with 6,000 long calls up a full collection took
45-65 ms instead of 176-230 in memory (bench/call_controller.py --up). Rare is still worth it.

Everything built at start-up (imports, dialplans, routing tables, pools) lives as long as the
process: frozen, no collection ever walks it.
"""

from __future__ import annotations

import gc

__all__ = ["FULL_COLLECTION_EVERY", "settle_for_traffic"]

FULL_COLLECTION_EVERY = 1000
"""Collections of the middle generation between two full collections (Python's default: 10)."""


def settle_for_traffic() -> None:
    """Freeze what start-up built and make full collections rare: call once, when ready."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
