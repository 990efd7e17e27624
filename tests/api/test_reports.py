"""Attribution reports over real call and form rows: grouping, answered rate, new vs repeat."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from uuid import UUID

from callrouter.call_events import CallAnswered, CallEnded, CallStarted
from callrouter.store.call_journal import CallJournal
from callrouter.store.ids import new_id
from tests.api.conftest import Api

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def record_calls(api: Api, client: UUID) -> None:
    calls = [
        # (minutes after T0, caller, attribution, answered)
        (-60 * 24 * 40, "+447700900001", {"source": "google"}, True),  # before the range
        (0, "+447700900001", {"source": "google", "campaign": "spring"}, True),
        (10, "+447700900002", {"source": "google", "campaign": "spring"}, False),
        (20, "+447700900003", {"source": "newsletter"}, True),
        (30, "+447700900003", {"source": "newsletter"}, True),
        (40, None, {"source": "direct"}, False),
    ]
    async with CallJournal(api.db) as journal:
        for minutes, caller, attribution, answered in calls:
            call_id, at = new_id(), T0 + timedelta(minutes=minutes)
            journal.record(
                CallStarted(
                    call_id=call_id,
                    client_id=client,
                    number_id=None,
                    tracking_number="+441515550001",
                    caller_number=caller,
                    sip_call_id=f"{call_id}@c",
                    trunk=None,
                    dialplan="default",
                    session_id=None,
                    attribution=attribution,
                    record=False,
                    at=at,
                )
            )
            if answered:
                journal.record(CallAnswered(call_id, at + timedelta(seconds=5)))
            journal.record(
                CallEnded(call_id, "answered" if answered else "no_answer", "caller", "x", at)
            )
        await journal.flushed()


async def test_calls_by_source_with_answered_rate_and_repeat_callers(api: Api) -> None:
    client_id, key = await api.client_with_key("Acme")
    await record_calls(api, UUID(client_id))
    query = "from=2026-11-01T00:00:00Z&to=2026-11-03T00:00:00Z"
    report = await api.ok("GET", f"/v1/reports/attribution?{query}", key)
    rows = {row["key"]: row for row in report["rows"]}
    assert rows["google"] == {
        "key": "google",
        "calls": 2,
        "answered": 1,
        "answered_rate": 0.5,
        "first_time_callers": 1,  # +447700900002; +447700900001 called before the range
        "repeat_callers": 1,
        "forms": 0,
        "visits": 0,
        "calls_per_visit": None,
        "forms_per_visit": None,
    }
    assert (rows["newsletter"]["first_time_callers"], rows["newsletter"]["repeat_callers"]) == (
        1,
        1,
    )
    assert rows["direct"]["first_time_callers"] + rows["direct"]["repeat_callers"] == 0
    by_campaign = await api.ok("GET", f"/v1/reports/attribution?by=campaign&{query}", key)
    assert {r["key"]: r["calls"] for r in by_campaign["rows"]} == {"spring": 2, "(none)": 3}


async def test_the_same_report_as_csv(api: Api) -> None:
    client_id, key = await api.client_with_key("Acme")
    await record_calls(api, UUID(client_id))
    async with api.http.get(
        "/v1/reports/attribution?format=csv&from=2026-11-01T00:00:00Z&to=2026-11-03T00:00:00Z",
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.status == 200 and response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert rows[0]["key"] == "google" and rows[0]["answered_rate"] == "0.5"


async def test_an_operator_must_name_the_client_and_ranges_must_be_ordered(api: Api) -> None:
    reply = await api.call("GET", "/v1/reports/attribution", api.operator_key)
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "client_id"
    _, key = await api.client_with_key("Acme")
    backwards = await api.call(
        "GET",
        "/v1/reports/attribution?from=2026-11-03T00:00:00Z&to=2026-11-01T00:00:00Z",
        key,
    )
    assert backwards.status == 422 and backwards.body["errors"][0]["field"] == "from"
