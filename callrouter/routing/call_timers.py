"""The calls' timers on one reactor timer: what the B2BUA arms for the call controller.

A call that is up keeps one to three timers armed for its whole length (the ceiling, the
keepalive, the session timer), and every full garbage collection walks what each one holds.
A Twisted ``DelayedCall`` per timer costs the collector 6 objects (the call, its bound
methods, its arguments); here a timer is one tuple in a heap, and one ``DelayedCall`` waits
for the earliest of them, re-armed when that deadline moves (STYLE.md, rule 2).

Rules of this file:
- A cancelled or re-armed timer is only forgotten in ``_due``; its heap entry is skipped when
  it comes up. Such entries are dropped all at once when they outnumber the live ones, so a
  cancelled four-hour ceiling does not stay four hours.
- Timers fire in deadline order; one started or cancelled by a timer's handler takes effect
  for the next one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callrouter.routing.call import TimerKey

__all__ = ["CallTimers"]


@dataclass(eq=False)
class CallTimers:
    """Named timers on one reactor timer.

    :param clock: the reactor: ``seconds()`` and ``callLater()``.
    :param fire: called with each timer's key when it is due.
    """

    clock: Any
    fire: Callable[[TimerKey], None]
    _due: dict[TimerKey, float] = field(default_factory=dict)
    """Each armed timer's deadline (the clock's seconds)."""
    _heap: list[tuple[float, int, TimerKey]] = field(default_factory=list)
    """(deadline, order of arming, key), live or not: live when ``_due`` has that deadline."""
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _armed: Any = None
    """The reactor's timer for the earliest deadline (None: nothing armed)."""
    _armed_for: float | None = None
    _firing: bool = False

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def start(self, key: TimerKey, delay: float) -> None:
        """Arm ``key`` to fire in ``delay`` seconds (re-armed if it was armed)."""
        when = self.clock.seconds() + delay
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._order), key))
        self._compact()
        self._rearm()

    def cancel(self, key: TimerKey) -> None:
        if self._due.pop(key, None) is not None:
            self._compact()

    def _compact(self) -> None:
        if 2 * len(self._due) < len(self._heap):
            self._heap = [entry for entry in self._heap if self._live(entry)]
            heapq.heapify(self._heap)

    def _live(self, entry: tuple[float, int, TimerKey]) -> bool:
        return self._due.get(entry[2]) == entry[0]

    def _rearm(self) -> None:
        if self._firing:
            return  # _on_time arms the next one when the due ones have fired
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        when = self._heap[0][0] if self._heap else None
        if when == self._armed_for:
            return
        if self._armed is not None and self._armed.active():
            self._armed.cancel()
        self._armed, self._armed_for = None, when
        if when is not None:
            self._armed = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._on_time)

    def _on_time(self) -> None:
        # What was armed for is due, even if the clock's sum rounded a hair below it.
        now = max(self.clock.seconds(), self._armed_for or 0.0)
        self._armed, self._armed_for = None, None
        self._firing = True
        try:
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)
                if self._live(entry):
                    del self._due[entry[2]]
                    self.fire(entry[2])
        finally:
            self._firing = False
            self._rearm()
