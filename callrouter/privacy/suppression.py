"""The suppression list in memory: how each caller's call must be treated, in O(1) on INVITE.

Two reasons put a number on the list (table ``suppressions``, migration 0008):

- ``objection``: the caller objected to processing. Their calls are still connected (refusing
  them would harm the caller, not protect them) but are not recorded, not attributed to a
  visit, and neither the call record, the webhooks nor the log carry their number.
- ``recording_consent_withdrawn``: calls are connected and attributed as usual but never
  recorded.

The list holds only keyed hashes (``SubjectHasher.phone``). It is read at start (``load``) and
kept fresh by PostgreSQL: a trigger sends each change on ``CHANNEL`` as a delta, which
``on_notify`` applies. Register the listener before calling ``load`` so no change is lost in
between; deltas that arrive during ``load`` are replayed after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, get_args
from uuid import UUID

from callrouter.privacy.subjects import SubjectHasher
from callrouter.store import privacy as store
from callrouter.store.database import Executor

__all__ = [
    "CHANNEL",
    "UNRESTRICTED",
    "CallerTreatment",
    "SuppressionList",
    "SuppressionReason",
]

log = logging.getLogger(__name__)

CHANNEL = "suppression_changed"
"""The LISTEN channel of migration 0008's trigger; payload ``+reason:hex`` or ``-reason:hex``."""

SuppressionReason = Literal["objection", "recording_consent_withdrawn"]
REASONS: tuple[SuppressionReason, ...] = get_args(SuppressionReason)


@dataclass(frozen=True, slots=True)
class CallerTreatment:
    """What the call path may do with one caller's call."""

    suppressed: bool
    """The caller objected: no recording, no attribution to a visit, and no caller number in
    the call record, in webhook payloads or in log lines."""
    record_allowed: bool
    """The call may be recorded (if its number asks for recording). False after an objection
    or a withdrawal of consent to recording."""


UNRESTRICTED = CallerTreatment(suppressed=False, record_allowed=True)
_NOT_RECORDED = CallerTreatment(suppressed=False, record_allowed=False)
_SUPPRESSED = CallerTreatment(suppressed=True, record_allowed=False)


class SuppressionList:
    """Keyed hashes of suppressed numbers, by reason.

    :param hasher: the same hasher (server secret) that wrote the table.
    """

    def __init__(self, hasher: SubjectHasher) -> None:
        self._hasher = hasher
        self._objected: set[bytes] = set()
        self._no_recording: set[bytes] = set()
        self._replay: list[str] | None = None

    def __len__(self) -> int:
        return len(self._objected) + len(self._no_recording)

    def treatment(self, client_id: UUID, e164: str | None) -> CallerTreatment:
        """How to treat a call to ``client_id``'s number from ``e164`` (None: withheld).

        One HMAC and two set lookups; safe on every INVITE.
        """
        if not e164 or not len(self):
            return UNRESTRICTED
        digest = self._hasher.phone(client_id, e164)
        if digest in self._objected:
            return _SUPPRESSED
        if digest in self._no_recording:
            return _NOT_RECORDED
        return UNRESTRICTED

    async def load(self, db: Executor) -> int:
        """Read the whole list (every client's); how many entries."""
        self._replay = []
        try:
            entries = await store.all_suppressions(db)
        except BaseException:
            self._replay = None
            raise
        objected: set[bytes] = set()
        no_recording: set[bytes] = set()
        for digest, reason in entries:
            (objected if reason == "objection" else no_recording).add(digest)
        self._objected, self._no_recording = objected, no_recording
        # Changes notified while the snapshot was read: applying one twice is harmless.
        replay, self._replay = self._replay, None
        for payload in replay:
            self._apply(payload)
        return len(entries)

    def on_notify(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        """The LISTEN callback for ``CHANNEL`` (asyncpg ``add_listener``)."""
        text = str(payload)
        if self._replay is not None:
            self._replay.append(text)
        self._apply(text)

    def _apply(self, payload: str) -> None:
        op = payload[:1]
        reason, _, hex_digest = payload[1:].partition(":")
        try:
            digest = bytes.fromhex(hex_digest)
        except ValueError:
            digest = b""
        if op not in ("+", "-") or reason not in REASONS or len(digest) != 32:
            log.error("suppression list: ignored a malformed notification")
            return
        target = self._objected if reason == "objection" else self._no_recording
        if op == "+":
            target.add(digest)
        else:
            target.discard(digest)
