"""The steps of a stop, each bounded in time.

``serve`` stops by unwinding what it started, in reverse. One step that never ends (a pool
waiting for a connection a stuck task never gives back, a peer that never answers a close)
would keep the process up until systemd or an operator kills it, with nothing said about why.
Each step here gets a deadline; past it the stop says which step it left and goes on, giving
the step's forced end (``abandon``) when it has one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

__all__ = ["STEP_SECONDS", "push_bounded"]

STEP_SECONDS = 10.0
"""The longest one step of a stop may take."""


def push_bounded(
    stack: AsyncExitStack,
    what: str,
    step: Callable[[], Awaitable[object]],
    say: Callable[[str], None],
    *,
    abandon: Callable[[], object] | None = None,
    seconds: float = STEP_SECONDS,
) -> None:
    """Run ``step()`` when ``stack`` unwinds, for at most ``seconds``; then ``abandon()``.

    :param what: the step, as the operator reads it ("the database pool").
    """

    async def bounded() -> None:
        try:
            await asyncio.wait_for(step(), seconds)
        except TimeoutError:
            say(f"stopping: {what} did not stop within {seconds:g} s; going on without it")
            if abandon is not None:
                abandon()

    stack.push_async_callback(bounded)
