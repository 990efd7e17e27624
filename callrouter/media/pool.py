"""Several media workers seen as one: where each recorded call goes.

Rules of this file:
- Each worker has its own slice of ``[media] ports``; the signalling side allocates a call's
  ports from the slice of the worker the call is placed on (so SDP is rewritten at once and two
  workers never bind the same port).
- A call is placed once, when it is anchored, and stays there: every later command of the call
  goes to the same worker (the anchor keeps the slot with the call).
- Placement takes the worker with the fewest calls (port pairs in use), skipping one that is
  being restarted; one whose last command went unanswered comes after every one that answers
  (it is tried again only when no other is left). No worker running: no placement, and the
  call is connected unrecorded, saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from callrouter.media.relay import PortAllocator

__all__ = ["MediaPool", "MediaSlot", "WorkerControl"]


class WorkerControl(Protocol):
    """A worker's control channel as placement sees it (``MediaWorkerProcess``)."""

    @property
    def running(self) -> bool:
        """Started and connected (False while it is being restarted)."""

    @property
    def answering(self) -> bool:
        """False when its last command went unanswered (hung or overloaded)."""

    def send_nowait(self, cmd: str, /, **fields: Any) -> asyncio.Future[dict[str, Any]]: ...


@dataclass(eq=False)
class MediaSlot:
    """One worker and the RTP ports the signalling side hands out for it."""

    number: int
    """The worker's number, 0 up (its label in metrics and logs)."""
    control: WorkerControl
    ports: PortAllocator
    """The worker's slice of ``[media] ports``."""

    @property
    def calls(self) -> int:
        """Calls anchored on this worker now (each holds two port pairs)."""
        return self.ports.in_use // 2

    def send_nowait(self, cmd: str, /, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        return self.control.send_nowait(cmd, **fields)


class MediaPool:
    """The media workers of this server, for the anchor to place calls on."""

    def __init__(self, slots: Sequence[MediaSlot]) -> None:
        self.slots = list(slots)

    def place(self) -> MediaSlot | None:
        """The worker for a new call, or None when none is running."""
        running = [slot for slot in self.slots if slot.control.running]
        if not running:
            return None
        # min() keeps the first of equals: ties go to the lower-numbered worker.
        return min(running, key=lambda slot: (not slot.control.answering, slot.calls))
