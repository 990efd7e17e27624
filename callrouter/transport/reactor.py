"""Twisted on the one asyncio loop: the asyncio reactor, installed once per process.

The reactor is Twisted's process-wide singleton; this is the only place that touches it, and
everything else receives the reactor as an argument.
"""

from __future__ import annotations

import asyncio
import sys

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.main import installReactor

__all__ = ["asyncio_reactor"]


def asyncio_reactor(loop: asyncio.AbstractEventLoop) -> AsyncioSelectorReactor:
    """The asyncio reactor driving ``loop``, installing it if no reactor is installed yet.

    It is never ``run()``: the asyncio loop runs, and Twisted's readers, writers and delayed
    calls are plain callbacks on it.
    """
    existing = sys.modules.get("twisted.internet.reactor")
    if existing is not None:
        if (
            not isinstance(existing, AsyncioSelectorReactor)
            or existing._asyncioEventloop is not loop
        ):
            raise RuntimeError("a different Twisted reactor is already installed in this process")
        return existing
    reactor = AsyncioSelectorReactor(loop)
    installReactor(reactor)  # type: ignore[no-untyped-call]
    return reactor
