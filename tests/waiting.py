"""Waiting on an observable condition, bounded: never a sleep as synchronisation."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, seconds: float = 10
) -> None:
    """Poll ``condition`` (a plain function or a coroutine function) until it holds, at most
    ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await _holds(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {seconds} s: {what}")
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else result
