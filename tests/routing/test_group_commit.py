"""The group commit on its own: who goes in which batch, and what a failed batch answers."""

from __future__ import annotations

import asyncio

import pytest

from callrouter.routing.group_commit import GroupCommit


class Writer:
    """Records each batch and holds it until the test lets it finish."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self._started = asyncio.Condition()

    async def write(self, _key: str, items: list[int]) -> list[int]:
        async with self._started:
            self.batches.append(items)
            self._started.notify_all()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]

    async def until_started(self, count: int) -> None:
        async with self._started:
            await self._started.wait_for(lambda: len(self.batches) >= count)


async def test_requests_arriving_while_a_batch_is_written_go_together_in_the_next() -> None:
    writer = Writer()
    commits = GroupCommit(writer.write)
    first = [asyncio.ensure_future(commits.submit("pool", i)) for i in range(3)]
    await writer.until_started(1)
    later = [asyncio.ensure_future(commits.submit("pool", i)) for i in range(3, 8)]
    for _ in range(5):
        await asyncio.sleep(0)  # loop turns in which a second batch could start
    assert writer.batches == [[0, 1, 2]]  # one in flight: the later ones wait
    writer.release.set()
    assert await asyncio.gather(*first, *later) == [i * 10 for i in range(8)]
    assert writer.batches == [[0, 1, 2], [3, 4, 5, 6, 7]]


async def test_more_batches_in_flight_only_up_to_the_bound_and_each_key_apart() -> None:
    writer = Writer()
    commits = GroupCommit(writer.write, in_flight=2)
    waiting = [asyncio.ensure_future(commits.submit("a", 1))]
    await writer.until_started(1)
    waiting.append(asyncio.ensure_future(commits.submit("a", 2)))
    waiting.append(asyncio.ensure_future(commits.submit("b", 3)))
    await writer.until_started(3)
    waiting += [asyncio.ensure_future(commits.submit("a", i)) for i in (4, 5)]
    for _ in range(5):
        await asyncio.sleep(0)  # loop turns in which a third batch of "a" could start
    assert writer.batches == [[1], [2], [3]]  # "a" has two in flight; 4 and 5 wait
    writer.release.set()
    assert await asyncio.gather(*waiting) == [10, 20, 30, 40, 50]
    assert writer.batches[3:] == [[4, 5]]


async def test_a_failed_batch_raises_to_each_of_its_requests_and_the_next_one_is_written() -> None:
    writer = Writer()
    commits = GroupCommit(writer.write)
    writer.fail = ConnectionResetError("database away")
    failing = [asyncio.ensure_future(commits.submit("pool", i)) for i in range(2)]
    writer.release.set()
    for request in failing:
        with pytest.raises(ConnectionResetError):
            await request
    writer.fail = None
    assert await commits.submit("pool", 7) == 70
