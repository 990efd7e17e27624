"""Group commit: requests that arrive while a batch of theirs is being written go together in
the next one.

Each key (a pool) has at most one batch in flight. A request arriving while none is starts one
at the loop's next turn, together with whatever arrived in the same turn; requests arriving
while it runs wait for it and then go in one batch. An idle node waits for no timer, and a busy
one writes as many requests per batch as arrived during the last. PostgreSQL's own group
commit (``commit_delay``) and a database connection pool's statement batching do the same.
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
    """

    def __init__(self, write: Callable[[K, list[T]], Awaitable[list[R]]]) -> None:
        self._write = write
        self._waiting: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._running: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: T) -> R:
        """``item``'s answer, once the batch it went in is written."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.setdefault(key, []).append((item, answer))
        if key not in self._running:
            self._running[key] = loop.create_task(self._drain(key))
        return await answer

    async def _drain(self, key: K) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
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
            del self._running[key]
            # Cancelled (the node is stopping): the batch in flight and those waiting end too.
            for _, answer in [*batch, *self._waiting.pop(key, [])]:
                if not answer.done():
                    answer.cancel()
