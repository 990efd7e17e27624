"""Group commit: requests that arrive while their key's batches are being written go together
in the next one.

Each key (a pool) has at most ``in_flight`` batches being written. A request arriving while
fewer are starts one at the loop's next turn, together with whatever arrived in the same turn;
requests arriving while all are busy wait, and the first batch to finish takes all of them.
An idle node waits for no timer, and a busy one writes as many requests per batch as arrived
during the last. PostgreSQL's own group commit (``commit_delay``) works the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[K, T, R]):
    """Runs ``write(key, items)`` (which answers each item, in order) for batches of items.

    :param write: one batch's work; what it raises is raised to every request of the batch.
    :param in_flight: batches of one key written at once; more than one lets a batch's round
        trips to the database overlap another's.
    """

    def __init__(
        self, write: Callable[[K, list[T]], Awaitable[list[R]]], *, in_flight: int = 1
    ) -> None:
        self._write = write
        self._in_flight = in_flight
        self._waiting: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._writers: dict[K, int] = {}
        self._starting: set[K] = set()
        """Keys with a writer that has not taken its first batch yet (it will take these)."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: T) -> R:
        """``item``'s answer, once the batch it went in is written."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.setdefault(key, []).append((item, answer))
        if key not in self._starting and self._writers.get(key, 0) < self._in_flight:
            self._starting.add(key)
            self._writers[key] = self._writers.get(key, 0) + 1
            task = loop.create_task(self._drain(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await answer

    async def _drain(self, key: K) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            self._starting.discard(key)
            while batch := self._waiting.pop(key, []):
                try:
                    answers = await self._write(key, [item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - each request of the batch gets it
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (_, answer), result in zip(batch, answers, strict=True):
                    if not answer.done():  # its request was cancelled meanwhile
                        answer.set_result(result)
        finally:
            self._writers[key] -= 1
            left = batch
            if not self._writers[key]:
                del self._writers[key]
                left = [*batch, *self._waiting.pop(key, [])]
            # Cancelled (the node is stopping): its batch, and the waiting ones if no writer
            # is left to take them, end too.
            for _, answer in left:
                if not answer.done():
                    answer.cancel()
