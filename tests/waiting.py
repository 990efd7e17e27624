"""Waiting on an observable condition, bounded: never a sleep as synchronisation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 10) -> None:
    """Poll ``condition`` until it holds, at most ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {seconds} s: {what}")
        await asyncio.sleep(0.02)
