"""The tracking numbers the router answers for, held in memory: a call costs no query, and
calls route while the database is away.

Memory follows the database through NOTIFYs (migration 0018: every row changed in ``numbers``
NOTIFYs its E.164 number on ``numbers_changed``). While the LISTEN connection hears them and
memory was read whole since it began to (``resync``), memory is the answer; a number heard to
change is read again at its next call (an edit over the API applies to the next call), and
forgotten if it is gone. Before that (a LISTEN connection lost, a resync that failed), every
INVITE reads its number in the database as before and the answer refreshes memory; when the
database does not answer (killed, restarting, slow past ``timeout``) the number comes from
memory: the last state seen, every number read at start and again every ``refresh`` seconds.
No INVITE waits on a database that is known to be away.

A query per INVITE was 7 % of serve's CPU at 200 calls/s (py-spy), and a round trip to
PostgreSQL on every call's post-dial delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from callrouter.store.availability import OUTAGE_ERRORS, DatabaseAvailability
from callrouter.store.numbers import Number

log = logging.getLogger(__name__)

CHANNEL = "numbers_changed"
"""Where migration 0018's trigger NOTIFYs the E.164 number of each row changed (empty: the
table was truncated; since migration 0020, ``GONE`` and the number when no row has it any
more)."""

GONE = "gone:"


class NumberDirectory:
    """:param lookup: the number for an E.164 string, from the database.
    :param every: every number, from the database.
    :param availability: skips the database while it is known to be away, and learns when a
        lookup finds it so.
    :param timeout: seconds a lookup may take before memory answers instead.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Number | None]],
        every: Callable[[], Awaitable[Sequence[Number]]],
        availability: DatabaseAvailability,
        *,
        timeout: float = 1.0,
    ) -> None:
        self._lookup = lookup
        self._every = every
        self._availability = availability
        self._timeout = timeout
        self._known: dict[str, Number] = {}
        self._listening = False
        self._complete = False
        """Memory holds every number as the database has it, but for those in ``_changed``."""
        self._epoch = 0
        """Counts the LISTEN connection's losses: a read begun before one may miss changes."""
        self._heard = 0
        """Counts the changes heard; ``_changed`` says when each number's last one was."""
        self._changed: dict[str, int] = {}
        """Numbers heard to change and not read again since."""
        self._gone: dict[str, int] = {}
        """Those of ``_changed`` whose last change heard took the number away."""

    @property
    def answering_from_memory(self) -> bool:
        """Whether calls find their numbers without a query (a metric and tests)."""
        return self._complete

    @property
    def changed_numbers(self) -> dict[str, int]:
        """The numbers heard to change and not read since, with the count of changes heard
        when each last changed (tests)."""
        return dict(self._changed)

    async def listen(self) -> None:
        """The LISTEN connection hears ``CHANNEL`` from now on (at start, and each time it is
        back): every number is read again, and memory is the answer. Raises the database's
        error."""
        self._listening = True
        await self.resync()

    def untrust(self) -> None:
        """The LISTEN connection is lost: changes may go unheard until ``resync``."""
        self._listening = False
        self._complete = False
        self._epoch += 1

    def on_change(self, _connection: Any, _pid: int, _channel: str, payload: Any) -> None:
        """A NOTIFY on ``CHANNEL``: that number is read again at its next call, and a number
        gone is forgotten now (the database may be away by its next call)."""
        self._heard += 1
        text = str(payload or "")
        if not text:
            self._complete = False  # truncated: read everything again
            self._epoch += 1
            return
        if text.startswith(GONE):
            text = text[len(GONE) :]
            self._known.pop(text, None)
            self._gone[text] = self._heard
        else:
            self._gone.pop(text, None)
        self._changed[text] = self._heard

    async def resync(self) -> None:
        """Read every number again; memory is the answer from then on if the LISTEN
        connection heard every change meanwhile. Raises the database's error."""
        epoch, heard = self._epoch, self._heard
        numbers = await self._every()
        self._known = {number.e164: number for number in numbers}
        if self._epoch == epoch and self._listening:
            # What changed after the read began may be older in it: those stay to be read.
            self._changed = {e164: at for e164, at in self._changed.items() if at > heard}
            self._complete = True
        # A number that went after the read began may still be in it.
        self._gone = {e164: at for e164, at in self._gone.items() if at > heard}
        for e164 in self._gone:
            self._known.pop(e164, None)

    async def refresh(self, seconds: float) -> None:
        """While memory is not the answer, read every number each ``seconds`` the database
        answers, until cancelled: memory stays near the database, and becomes the answer
        again after a failed ``resync``. While it is the answer, NOTIFYs keep it."""
        while True:
            await asyncio.sleep(seconds)
            if self._complete or not self._availability.up:
                continue
            try:
                await self.resync()
            except OUTAGE_ERRORS as exc:
                self._availability.report(False, type(exc).__name__)

    async def find(self, e164: str) -> Number | None:
        """The number ``e164``, or None when it is not ours."""
        if self._complete and e164 not in self._changed:
            return self._known.get(e164)
        if self._availability.up:
            epoch, heard = self._epoch, self._changed.get(e164)
            try:
                number = await asyncio.wait_for(self._lookup(e164), self._timeout)
            except OUTAGE_ERRORS as exc:
                self._availability.report(False, type(exc).__name__)
            else:
                if number is None:
                    self._known.pop(e164, None)
                else:
                    self._known[e164] = number
                if self._epoch == epoch and self._changed.get(e164) == heard:
                    self._changed.pop(e164, None)  # no change since the read began
                    self._gone.pop(e164, None)
                return number
        return self._known.get(e164)
