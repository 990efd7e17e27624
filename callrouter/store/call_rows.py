"""What a batch of call events does to the calls and call_attempts rows: one statement per table.

A statement per event made the journal the biggest cost of a call (issue 13's profile). Here a
batch is folded per row in Python, then each table gets one statement: an INSERT of the rows
the batch starts (with everything that happened to them later in the batch) and, in the same
statement, an UPDATE of rows that already existed (a call started in an earlier batch, or a
start replayed from the spool). The result is what applying the events one by one, in order,
would leave, and applying a batch again changes nothing:

- a start is written once (ON CONFLICT DO NOTHING); events before a row's start in the batch
  change only a row that existed already, as they would have one by one;
- the first ringing time stays; an end is final (a call's answer or end after its end, an
  attempt's second end, change nothing); an attempt's answer and a refused recording's reason
  are the last given.

The INSERT sits in a WITH clause: both parts see the table as it was before the statement, so
the UPDATE never touches a row the INSERT just made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    RecordingFinished,
    RecordingRefused,
    WebhookRaised,
)
from callrouter.store.database import Executor
from callrouter.store.recordings import Recording, insert_finished, view
from callrouter.store.webhooks import enqueue_raised, event_body

__all__ = ["Written", "write_batch"]


@dataclass(slots=True)
class Written:
    """What a batch stored besides its rows: for the journal to pass on once committed."""

    deliveries: int = 0
    """Webhook deliveries queued."""
    recordings: list[Recording] = field(default_factory=list)
    """Recording rows made (a replayed recording is not made again)."""
    erased: int = 0
    """Finished files whose call was erased meanwhile, queued for shredding instead."""

    def add(self, other: Written) -> None:
        self.deliveries += other.deliveries
        self.recordings += other.recordings
        self.erased += other.erased


@dataclass(slots=True)
class CallChanges:
    """What a run of events does to one calls row."""

    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended: CallEnded | None = None
    not_recorded_reason: str | None = None
    #: No event but a start: the row needs no UPDATE.
    empty: bool = True

    def add(self, event: CallEvent) -> None:
        self.empty = False
        match event:
            case CallRinging() if self.ringing_at is None:
                self.ringing_at = event.at
            case CallAnswered() if self.ended is None:
                self.answered_at = event.at
            case CallEnded() if self.ended is None:
                self.ended = event
            case RecordingRefused():
                self.not_recorded_reason = event.reason

    @property
    def state(self) -> str:
        return "ended" if self.ended else "active" if self.answered_at else "ringing"


@dataclass(slots=True)
class AttemptChanges:
    """What a run of events does to one call_attempts row."""

    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended: AttemptEnded | None = None
    #: No event but a start: the row needs no UPDATE.
    empty: bool = True

    def add(self, event: CallEvent) -> None:
        self.empty = False
        match event:
            case AttemptRinging() if self.ringing_at is None:
                self.ringing_at = event.at
            case AttemptAnswered():
                self.answered_at = event.at
            case AttemptEnded() if self.ended is None:
                self.ended = event


S = TypeVar("S", CallStarted, AttemptStarted)
C = TypeVar("C", CallChanges, AttemptChanges)


@dataclass(slots=True)
class Row(Generic[S, C]):
    """One row's events: its start, if the batch has one, and what the others change."""

    #: Every change in the batch, for a row that existed before it.
    existing: C
    #: The changes after the start, for the row the start makes.
    fresh: C
    start: S | None = None

    def take(self, event: CallEvent, start: S | None) -> None:
        if start is not None:
            self.start = self.start or start  # a start again (a replay) changes nothing
            return
        self.existing.add(event)
        if self.start is not None:
            self.fresh.add(event)


CallRow = Row[CallStarted, CallChanges]
AttemptRow = Row[AttemptStarted, AttemptChanges]
CallRows = dict[UUID, CallRow]
AttemptRows = dict[tuple[UUID, int], AttemptRow]


def fold(batch: Sequence[CallEvent]) -> tuple[CallRows, AttemptRows]:
    """The batch per row, rows in the order the batch first names them (webhook events and
    finished recordings change no call or attempt row)."""
    calls: CallRows = {}
    attempts: AttemptRows = {}
    for event in batch:
        match event:
            case WebhookRaised() | RecordingFinished():
                continue
            case AttemptStarted() | AttemptRinging() | AttemptAnswered() | AttemptEnded():
                key = (event.call_id, event.seq)
                if key not in attempts:
                    attempts[key] = Row(AttemptChanges(), AttemptChanges())
                start = event if isinstance(event, AttemptStarted) else None
                attempts[key].take(event, start)
            case _:
                if event.call_id not in calls:
                    calls[event.call_id] = Row(CallChanges(), CallChanges())
                calls[event.call_id].take(event, event if isinstance(event, CallStarted) else None)
    return calls, attempts


_CALLS = """
WITH fresh AS (
    INSERT INTO calls (id, client_id, number_id, tracking_number, caller_number, sip_call_id,
        trunk, dialplan, session_id, attribution, record, started_at, state, ringing_at,
        answered_at, disposition, hangup_by, hangup_reason, ended_at, not_recorded_reason, node)
    SELECT *, $29::text FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::uuid[], $10::jsonb[], $11::boolean[],
        $12::timestamptz[], $13::text[], $14::timestamptz[], $15::timestamptz[], $16::text[],
        $17::text[], $18::text[], $19::timestamptz[], $20::text[])
    ON CONFLICT (id) DO NOTHING
)
UPDATE calls c SET
    ringing_at = coalesce(c.ringing_at, d.ringing_at),
    state = CASE WHEN c.state = 'ended' THEN c.state
                 WHEN d.ended_at IS NOT NULL THEN 'ended'
                 WHEN d.answered_at IS NOT NULL THEN 'active'
                 ELSE c.state END,
    answered_at = CASE WHEN c.state <> 'ended' AND d.answered_at IS NOT NULL
                       THEN d.answered_at ELSE c.answered_at END,
    disposition = CASE WHEN c.state <> 'ended' AND d.ended_at IS NOT NULL
                       THEN d.disposition ELSE c.disposition END,
    hangup_by = CASE WHEN c.state <> 'ended' AND d.ended_at IS NOT NULL
                     THEN d.hangup_by ELSE c.hangup_by END,
    hangup_reason = CASE WHEN c.state <> 'ended' AND d.ended_at IS NOT NULL
                         THEN d.hangup_reason ELSE c.hangup_reason END,
    ended_at = CASE WHEN c.state <> 'ended' AND d.ended_at IS NOT NULL
                    THEN d.ended_at ELSE c.ended_at END,
    not_recorded_reason = coalesce(d.not_recorded_reason, c.not_recorded_reason)
FROM unnest($21::uuid[], $22::timestamptz[], $23::timestamptz[], $24::text[], $25::text[],
    $26::text[], $27::timestamptz[], $28::text[])
    AS d (id, ringing_at, answered_at, disposition, hangup_by, hangup_reason, ended_at,
          not_recorded_reason)
WHERE c.id = d.id
"""

_ATTEMPTS = """
WITH fresh AS (
    INSERT INTO call_attempts (call_id, seq, destination, started_at, ringing_at, answered_at,
        ended_at, result, sip_status, reason)
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::timestamptz[],
        $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::text[], $9::integer[],
        $10::text[])
    ON CONFLICT DO NOTHING
)
UPDATE call_attempts a SET
    ringing_at = coalesce(a.ringing_at, d.ringing_at),
    answered_at = coalesce(d.answered_at, a.answered_at),
    result = CASE WHEN a.ended_at IS NULL AND d.ended_at IS NOT NULL
                  THEN d.result ELSE a.result END,
    sip_status = CASE WHEN a.ended_at IS NULL AND d.ended_at IS NOT NULL
                      THEN d.sip_status ELSE a.sip_status END,
    reason = CASE WHEN a.ended_at IS NULL AND d.ended_at IS NOT NULL
                  THEN d.reason ELSE a.reason END,
    ended_at = coalesce(a.ended_at, d.ended_at)
FROM unnest($11::uuid[], $12::integer[], $13::timestamptz[], $14::timestamptz[],
    $15::timestamptz[], $16::text[], $17::integer[], $18::text[])
    AS d (call_id, seq, ringing_at, answered_at, ended_at, result, sip_status, reason)
WHERE a.call_id = d.call_id AND a.seq = d.seq
"""


def _columns(rows: list[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as one list per column: unnest() takes the columns as arrays."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def _call_end(end: CallEnded | None) -> tuple[object, ...]:
    """disposition, hangup_by, hangup_reason, ended_at."""
    return (None,) * 4 if end is None else (end.disposition, end.hangup_by, end.reason, end.at)


def _attempt_end(end: AttemptEnded | None) -> tuple[object, ...]:
    """ended_at, result, sip_status, reason."""
    return (None,) * 4 if end is None else (end.at, end.result, end.sip_status, end.reason)


def _call_params(rows: CallRows) -> list[list[object]]:
    fresh: list[tuple[object, ...]] = []
    existing: list[tuple[object, ...]] = []
    for call_id, row in rows.items():
        if (s := row.start) is not None:
            f = row.fresh
            fresh.append(
                (
                    call_id,
                    s.client_id,
                    s.number_id,
                    s.tracking_number,
                    s.caller_number,
                    s.sip_call_id,
                    s.trunk,
                    s.dialplan,
                    s.session_id,
                    s.attribution,
                    s.record,
                    s.at,
                    f.state,
                    f.ringing_at,
                    f.answered_at,
                    *_call_end(f.ended),
                    f.not_recorded_reason,
                )
            )
        if not row.existing.empty:
            e = row.existing
            existing.append(
                (
                    call_id,
                    e.ringing_at,
                    e.answered_at,
                    *_call_end(e.ended),
                    e.not_recorded_reason,
                )
            )
    return _columns(fresh, 20) + _columns(existing, 8)


def _attempt_params(rows: AttemptRows) -> list[list[object]]:
    fresh: list[tuple[object, ...]] = []
    existing: list[tuple[object, ...]] = []
    for (call_id, seq), row in rows.items():
        if (s := row.start) is not None:
            f = row.fresh
            fresh.append(
                (
                    call_id,
                    seq,
                    s.destination,
                    s.at,
                    f.ringing_at,
                    f.answered_at,
                    *_attempt_end(f.ended),
                )
            )
        if not row.existing.empty:
            e = row.existing
            existing.append(
                (
                    call_id,
                    seq,
                    e.ringing_at,
                    e.answered_at,
                    *_attempt_end(e.ended),
                )
            )
    return _columns(fresh, 10) + _columns(existing, 8)


async def write_batch(
    connection: Executor, batch: Sequence[CallEvent], node: str | None = None
) -> Written:
    """The SQL for a batch, calls before their attempts and recordings (which refer to them),
    then the webhook deliveries the batch raised, recording.ready for each recording row it
    made among them: one statement for each table the batch touches (two for deliveries).

    :param node: the node whose calls these are (written into the calls it starts).
    """
    raised = [event for event in batch if isinstance(event, WebhookRaised)]
    finished = [event for event in batch if isinstance(event, RecordingFinished)]
    calls, attempts = fold(batch)
    if calls:
        await connection.execute(_CALLS, *_call_params(calls), node)
    if attempts:
        await connection.execute(_ATTEMPTS, *_attempt_params(attempts))
    written = Written()
    if finished:
        stored = await insert_finished(connection, finished)
        written.recordings, written.erased = stored.made, stored.erased
        raised += _ready(written.recordings, {e.recording_id: e for e in finished})
    if raised:
        written.deliveries = await enqueue_raised(connection, raised)
    return written


def _ready(made: list[Recording], finished: dict[UUID, RecordingFinished]) -> list[WebhookRaised]:
    """recording.ready for each new row, named by its event so a replay queues it once."""
    return [
        WebhookRaised(
            recording.call_id,
            recording.client_id,
            finished[recording.id].event_id,
            "recording.ready",
            event_body("recording.ready", view(recording), finished[recording.id].at),
            finished[recording.id].at,
        )
        for recording in made
    ]
