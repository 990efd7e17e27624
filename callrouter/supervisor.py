"""Background tasks that outlive their failures.

A service loop (the dialplan watcher, the session sweeper, the webhook sender, the daily purge)
that raises is logged and started again after a pause that doubles up to a ceiling, so a passing
fault such as running out of file descriptors degrades the server for a while instead of
silently stopping a job until the next restart. A run that lasted long enough counts as healthy
and resets the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass(eq=False)
class Supervisor:
    """Runs named jobs until ``stop``, restarting each one that ends or raises.

    :param first_delay: seconds before the first restart of a job.
    :param max_delay: ceiling of the doubling pause between restarts.
    :param healthy_after: a run at least this long resets the pause to ``first_delay``.
    :param clock: monotonic seconds (injected so tests need not wait for real time).
    """

    first_delay: float = 1.0
    max_delay: float = 60.0
    healthy_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    restarts: dict[str, int] = field(default_factory=dict)
    """How many times each job was restarted (for tests and readiness)."""
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, name: str, job: Job) -> None:
        """Run ``job()`` in the background under ``name`` (unique)."""
        if name in self._tasks:
            raise ValueError(f"a job named {name!r} is already supervised")
        self.restarts[name] = 0
        self._tasks[name] = asyncio.get_running_loop().create_task(self._keep(name, job), name=name)

    async def _keep(self, name: str, job: Job) -> None:
        delay = self.first_delay
        while True:
            started = self.clock()
            try:
                await job()
                what = "stopped on its own"
            except Exception as exc:  # noqa: BLE001 - any failure is logged and restarted
                # Exception, not BaseException: cancellation is how stop() ends the job.
                what = f"died ({type(exc).__name__}: {exc})"
            if self.clock() - started >= self.healthy_after:
                delay = self.first_delay
            log.error("%s: %s; restarting in %g s", name, what, delay)
            await asyncio.sleep(delay)
            self.restarts[name] += 1
            log.warning("%s: restarted (restart %d)", name, self.restarts[name])
            delay = min(delay * 2, self.max_delay)

    async def stop(self) -> None:
        """Cancel every job and wait for each to end."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
