"""GET /v1/calls: filters, live calls and the attempts of each call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from callrouter.call_events import (
    AttemptEnded,
    AttemptStarted,
    CallAnswered,
    CallEnded,
)
from callrouter.store.call_journal import CallJournal
from callrouter.store.ids import new_id
from tests.api.conftest import Api
from tests.call_started import call_started

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


async def test_calls_are_filtered_and_carry_their_attempts(api: Api) -> None:
    client_id, key = await api.client_with_key("Acme")
    client = UUID(client_id)
    ended, live, busy = new_id(), new_id(), new_id()
    async with CallJournal(api.db) as journal:
        for call_id, source, minutes in (
            (ended, "google", 0),
            (live, "bing", 10),
            (busy, "google", 20),
        ):
            journal.record(
                call_started(
                    call_id,
                    client,
                    T0 + timedelta(minutes=minutes),
                    attribution={"source": source, "campaign": "spring"},
                    record=False,
                )
            )
            journal.record(
                AttemptStarted(call_id, 1, "sip:desk@pbx.example", T0 + timedelta(minutes=minutes))
            )
        journal.record(CallAnswered(ended, T0 + timedelta(seconds=4)))
        journal.record(AttemptEnded(ended, 1, "answered", 200, "BYE", T0 + timedelta(seconds=64)))
        journal.record(CallEnded(ended, "answered", "caller", "BYE", T0 + timedelta(seconds=64)))
        journal.record(CallAnswered(live, T0 + timedelta(minutes=10, seconds=3)))
        end = T0 + timedelta(minutes=20, seconds=2)
        journal.record(AttemptEnded(busy, 1, "busy", 486, "Busy Here", end))
        journal.record(CallEnded(busy, "busy", "callee", "486 Busy Here", end))
        await journal.flushed()

    async def ids(query: str) -> list[str]:
        page = await api.ok("GET", f"/v1/calls?{query}", key)
        return [c["id"] for c in page["data"]]

    assert await ids("state=active") == [str(live)]
    assert await ids("disposition=busy") == [str(busy)]
    assert await ids("source=google") == [str(ended), str(busy)]
    assert await ids("from=2026-11-23T09:05:00Z&to=2026-11-23T09:15:00Z") == [str(live)]
    assert await ids("number=%2B441515550001&limit=1") == [str(ended)]

    call = await api.ok("GET", f"/v1/calls/{ended}", key)
    assert call["duration_seconds"] == 64 and call["talk_seconds"] == 60
    assert call["attempts"] == [
        {
            "seq": 1,
            "destination": "sip:desk@pbx.example",
            "started_at": "2026-11-23T09:00:00Z",
            "ringing_at": None,
            "answered_at": None,
            "ended_at": "2026-11-23T09:01:04Z",
            "result": "answered",
            "sip_status": 200,
            "reason": "BYE",
        }
    ]

    bad = await api.call("GET", "/v1/calls?from=yesterday&disposition=maybe", key)
    assert bad.status == 422
    assert {e["field"] for e in bad.body["errors"]} == {"from", "disposition"}


async def test_calls_page_in_the_order_they_started(api: Api) -> None:
    """Call ids are UUIDv7, made when the INVITE arrives, so paging by id is paging by time:
    rows written to the journal newest first still come back oldest first, page after page."""
    client_id, key = await api.client_with_key("Pager")
    started = [(new_id(), T0 + timedelta(minutes=minute)) for minute in range(7)]
    async with CallJournal(api.db) as journal:
        for call_id, at in reversed(started):
            journal.record(
                call_started(
                    call_id,
                    UUID(client_id),
                    at,
                    tracking_number="+441515550002",
                    caller_number=None,
                    record=False,
                )
            )
        await journal.flushed()

    seen: list[dict[str, str]] = []
    query = "limit=3"
    for _ in range(len(started)):
        page = await api.ok("GET", f"/v1/calls?{query}", key)
        assert 0 < len(page["data"]) <= 3
        seen += page["data"]
        if page["next_cursor"] is None:
            break
        query = f"limit=3&cursor={page['next_cursor']}"
    assert [call["id"] for call in seen] == [str(call_id) for call_id, _at in started]
    assert [call["started_at"] for call in seen] == [
        at.strftime("%Y-%m-%dT%H:%M:%SZ") for _id, at in started
    ]
    assert {UUID(call["id"]).version for call in seen} == {7}
