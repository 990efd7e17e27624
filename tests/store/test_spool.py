"""The spool keeps call events on local disk, in order, across kills, within its bound."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from asyncpg.pgproto.pgproto import UUID as RowUuid

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
    RecordingRefused,
)
from callrouter.store.spool import EventSpool, SpoolFull

T0 = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


def one_of_each() -> list[CallEvent]:
    call = uuid4()
    return [
        CallStarted(
            call_id=call,
            client_id=RowUuid(uuid4().bytes),  # ids read from PostgreSQL are asyncpg's class
            number_id=None,
            tracking_number="+441515550001",
            caller_number=None,
            sip_call_id="abc@carrier",
            trunk="config",
            dialplan="default",
            session_id=uuid4(),
            attribution={"source": "google", "nested": {"a": [1, 2]}},
            record=True,
            at=T0,
        ),
        AttemptStarted(call, 1, "sip:desk@pbx.example", T0),
        AttemptRinging(call, 1, T0),
        CallRinging(call, T0),
        AttemptAnswered(call, 1, T0),
        CallAnswered(call, T0),
        RecordingRefused(call, "no media worker"),
        AttemptEnded(call, 1, "answered", 200, "BYE", T0),
        CallEnded(call, "answered", "caller", "BYE", T0),
    ]


def test_every_event_type_comes_back_equal_after_a_reopen(tmp_path: Path) -> None:
    events = one_of_each()
    spool = EventSpool(tmp_path, max_bytes=1 << 20)
    assert spool.open() == []
    spooled = spool.append(events)
    assert [s.seq for s in spooled] == list(range(1, len(events) + 1))
    spool.close()

    again = EventSpool(tmp_path, max_bytes=1 << 20)
    held = again.open()
    assert [s.event for s in held] == events
    # Numbering goes on after what is on disk.
    assert again.append(events[:1])[0].seq == len(events) + 1


def test_a_half_written_last_line_is_ignored_and_numbering_goes_on(tmp_path: Path) -> None:
    events = one_of_each()
    spool = EventSpool(tmp_path, max_bytes=1 << 20)
    spool.open()
    spool.append(events[:3])
    spool.close()
    (segment,) = tmp_path.glob("*.jsonl")
    with segment.open("ab") as file:
        file.write(b'{"seq":4,"type":"CallRing')  # killed in the middle of a write

    again = EventSpool(tmp_path, max_bytes=1 << 20)
    assert [s.event for s in again.open()] == events[:3]


def test_applied_events_are_not_replayed_and_their_segments_go(tmp_path: Path) -> None:
    events = one_of_each()
    spool = EventSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1)
    spool.open()
    first = spool.append(events[:4])
    spool.applied(first[-1].seq)  # the segment is "large" and fully applied: a new one starts
    second = spool.append(events[4:])
    spool.applied(second[0].seq)
    assert len(list(tmp_path.glob("*.jsonl"))) == 1, "the applied segment is deleted"
    spool.close()

    again = EventSpool(tmp_path, max_bytes=1 << 20)
    held = again.open()
    assert [s.seq for s in held] == [s.seq for s in second[1:]]
    assert [s.event for s in held] == events[5:]


def test_a_full_spool_refuses_a_batch_and_writes_none_of_it(tmp_path: Path) -> None:
    events = one_of_each()
    spool = EventSpool(tmp_path, max_bytes=600)
    spool.open()
    spool.append(events[:1])
    size = spool.bytes
    with pytest.raises(SpoolFull):
        spool.append(events)
    assert spool.bytes == size
    assert sum(p.stat().st_size for p in tmp_path.glob("*.jsonl")) == size
