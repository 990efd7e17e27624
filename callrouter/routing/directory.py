"""The tracking numbers the router answers for, held in memory so calls route while the
database is away.

While PostgreSQL answers, every INVITE reads its number there (an edit over the API applies to
the next call) and the answer refreshes memory; when it does not (killed, restarting, slow past
``timeout``), the number comes from memory: the last state seen, every number loaded at start
and reloaded every ``refresh`` seconds (so a number added over the API is known even if it was
never called before the outage). No INVITE waits on a database that is known to be away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from callrouter.store.availability import OUTAGE_ERRORS, DatabaseAvailability
from callrouter.store.numbers import Number

log = logging.getLogger(__name__)


class NumberDirectory:
    """:param lookup: the number for an E.164 string, from the database.
    :param availability: skips the database while it is known to be away, and learns when a
        lookup finds it so.
    :param timeout: seconds a lookup may take before memory answers instead.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Number | None]],
        availability: DatabaseAvailability,
        *,
        timeout: float = 1.0,
    ) -> None:
        self._lookup = lookup
        self._availability = availability
        self._timeout = timeout
        self._known: dict[str, Number] = {}

    def load(self, numbers: list[Number]) -> None:
        self._known = {number.e164: number for number in numbers}

    async def refresh(
        self, every: Callable[[], Awaitable[Sequence[Number]]], seconds: float
    ) -> None:
        """Reload every number each ``seconds`` while the database answers, until cancelled."""
        while True:
            await asyncio.sleep(seconds)
            if not self._availability.up:
                continue
            try:
                numbers = await every()
            except OUTAGE_ERRORS as exc:
                self._availability.report(False, type(exc).__name__)
                continue
            self.load(list(numbers))

    async def find(self, e164: str) -> Number | None:
        """The number ``e164``, or None when it is not ours."""
        if self._availability.up:
            try:
                number = await asyncio.wait_for(self._lookup(e164), self._timeout)
            except OUTAGE_ERRORS as exc:
                self._availability.report(False, type(exc).__name__)
            else:
                if number is None:
                    self._known.pop(e164, None)
                else:
                    self._known[e164] = number
                return number
        return self._known.get(e164)
