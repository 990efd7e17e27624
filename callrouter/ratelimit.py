"""Token buckets keyed by who is asking (an API key, a source address), in a bounded table.

Pure: ``now`` is passed in. The table forgets the least recently seen keys past its bound, so a
flood of distinct sources cannot grow memory; a forgotten key simply starts with a full bucket.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBuckets:
    """One bucket per key: ``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def available(self, key: Hashable, now: float) -> float:
        """Tokens in ``key``'s bucket now, without spending any."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens: 0.0 if allowed, else the seconds until it would be."""
        # available(), inline: the swap script's every request passes here.
        held = self._buckets.get(key)
        if held is None:
            tokens = self.burst
        else:
            tokens = min(self.burst, held[0] + (now - held[1]) * self.rate)
        if tokens >= cost:
            tokens -= cost
            wait = 0.0
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
