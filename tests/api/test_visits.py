"""A session is a visit: later pages continue it, campaigns follow the pool's attribution model,
the journey is kept; exhausted pools under reuse_oldest take the lease idle longest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from callrouter.call_events import CallEnded, CallStarted
from callrouter.store.call_journal import CallJournal
from callrouter.store.ids import new_id
from tests.api.conftest import Api
from tests.api.test_sessions import ORIGIN, pool_with_numbers

NEWSLETTER = ORIGIN + "/offers?utm_source=newsletter&utm_medium=email&utm_campaign=dec&fbclid=ABC"


async def view(
    api: Api, pool: dict[str, Any], page: str, referrer: str | None, visitor: str = "v1"
) -> Any:
    reply = await api.call(
        "POST",
        "/v1/sessions",
        json={
            "pool_key": pool["public_key"],
            "visitor_id": visitor,
            "page_url": page,
            "referrer": referrer,
            "title": page.rsplit("/", 1)[-1].split("?", maxsplit=1)[0],
        },
        headers={"Origin": ORIGIN},
    )
    assert reply.status == 201, reply.body
    return reply.body


async def test_the_second_page_continues_the_visit_and_keeps_its_campaign(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    entry = await view(api, pool, NEWSLETTER, "https://mail.example.net/inbox")
    api.clock.now += 40
    second = await view(api, pool, ORIGIN + "/contact?x=1", ORIGIN + "/offers")
    assert second["session_id"] == entry["session_id"]
    assert second["number"] == entry["number"]
    attribution = api.sessions.attribute(second["number"]["e164"])
    assert attribution is not None and str(attribution.session_id) == entry["session_id"]
    assert (attribution.facts["source"], attribution.facts["medium"]) == ("newsletter", "email")
    assert attribution.facts["campaign"] == "dec"
    visit = await api.sessions.visit(attribution.session_id)
    assert visit is not None
    assert [p["url"] for p in visit.record.journey] == [ORIGIN + "/offers", ORIGIN + "/contact"]
    assert [p["title"] for p in visit.record.journey] == ["offers", "contact"]


async def test_a_click_inside_the_site_is_never_a_source(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    entry = await view(api, pool, ORIGIN + "/prices", ORIGIN + "/", visitor="fresh")
    attribution = api.sessions.attribute(entry["number"]["e164"])
    assert attribution is not None
    assert (attribution.facts["source"], attribution.facts["medium"]) == ("direct", "none")
    assert "referrer" not in attribution.facts


async def test_the_visit_ends_after_the_hold_of_inactivity(api: Api) -> None:
    _, pool = await pool_with_numbers(api)  # lease_hold_seconds 60
    entry = await view(api, pool, NEWSLETTER, None)
    api.clock.now += 61
    later = await view(api, pool, ORIGIN + "/", None)
    assert later["session_id"] != entry["session_id"]


@pytest.mark.parametrize(
    ("model", "mid_visit", "returned"),
    [
        ("first_touch", "newsletter", "newsletter"),
        ("last_non_direct", "google", "bing"),
    ],
)
async def test_a_new_campaign_mid_visit_and_on_return_follows_the_model(
    api: Api, model: str, mid_visit: str, returned: str
) -> None:
    _, pool = await pool_with_numbers(api, attribution_model=model)
    assert pool["attribution_model"] == model
    entry = await view(api, pool, NEWSLETTER, None)
    api.clock.now += 10
    clicked = await view(api, pool, ORIGIN + "/?gclid=G1", "https://www.google.com/")
    assert clicked["session_id"] == entry["session_id"]
    facts = api.sessions.attribute(clicked["number"]["e164"])
    assert facts is not None and facts.facts["source"] == mid_visit
    visit = await api.sessions.visit(facts.session_id)
    assert visit is not None
    touches = visit.record.touches
    assert (touches["first"]["source"], touches["last"]["source"]) == ("newsletter", "google")
    assert touches["last"]["gclid"] == "G1"
    # A return visit, long after the hold, from a Bing ad.
    api.clock.now += 3600
    back = await view(api, pool, ORIGIN + "/?msclkid=B2", None)
    assert back["session_id"] != entry["session_id"]
    facts = api.sessions.attribute(back["number"]["e164"])
    assert facts is not None and facts.facts["source"] == returned
    visit = await api.sessions.visit(facts.session_id)
    assert visit is not None
    touches = visit.record.touches
    assert (touches["first"]["source"], touches["last"]["source"]) == ("newsletter", "bing")
    # A direct return keeps the latest campaign as the last non-direct touch.
    api.clock.now += 3600
    direct = await view(api, pool, ORIGIN + "/", None)
    facts = api.sessions.attribute(direct["number"]["e164"])
    assert facts is not None and facts.facts["source"] == returned


async def test_the_journey_keeps_the_last_fifty_pages(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    for i in range(60):
        api.clock.now += 1
        page = await view(api, pool, f"{ORIGIN}/p{i}", None)
    visit = await api.sessions.visit(UUID(page["session_id"]))
    assert visit is not None
    assert len(visit.record.journey) == 50
    assert visit.record.journey[0]["url"] == f"{ORIGIN}/p10"
    row = await api.db.fetchrow("SELECT journey, touches FROM sessions")
    assert row is not None and len(row["journey"]) == 50
    assert row["touches"]["first"]["landing_page"] == f"{ORIGIN}/p0"


async def test_reuse_oldest_with_every_number_leased_takes_the_idle_visitors(api: Api) -> None:
    _, pool = await pool_with_numbers(api, count=2)
    first = await view(api, pool, ORIGIN + "/", None, visitor="a")
    api.clock.now += 5
    second = await view(api, pool, ORIGIN + "/", None, visitor="b")
    api.clock.now += 5
    await view(api, pool, ORIGIN + "/next", None, visitor="a")  # a is active again
    api.clock.now += 5
    third = await view(api, pool, ORIGIN + "/?gclid=X", None, visitor="c")
    assert third["number"] == second["number"]  # b's page has been idle longest
    attribution = api.sessions.attribute(third["number"]["e164"])
    assert attribution is not None and str(attribution.session_id) == third["session_id"]
    assert first["number"] != third["number"]
    row = await api.db.fetchrow(
        "SELECT lease_expires_at, last_seen_at FROM sessions WHERE id = $1",
        UUID(second["session_id"]),
    )
    # Written as over when it was taken (10 s after its last page), not at its hold's end.
    assert row is not None
    assert (row["lease_expires_at"] - row["last_seen_at"]).total_seconds() == 10


async def test_reports_count_visits_that_did_not_convert_and_conversion_rates(api: Api) -> None:
    client_id, pool = await pool_with_numbers(api, count=3)
    converted = await view(api, pool, NEWSLETTER, None, visitor="a")
    await view(api, pool, NEWSLETTER, None, visitor="b")
    await view(api, pool, ORIGIN + "/?gclid=G", None, visitor="c")
    form = await api.call(
        "POST",
        "/v1/forms",
        json={"pool_key": pool["public_key"], "session_id": converted["session_id"], "form": "f"},
        headers={"Origin": ORIGIN},
    )
    assert form.status == 201
    now = datetime.fromtimestamp(api.clock.now, UTC)
    query = f"client_id={client_id}&from={(now - timedelta(hours=1)).isoformat()}"
    query += f"&to={(now + timedelta(hours=1)).isoformat()}"
    report = await api.ok("GET", "/v1/reports/attribution?" + query.replace("+", "%2B"))
    rows = {r["key"]: r for r in report["rows"]}
    assert (rows["newsletter"]["visits"], rows["newsletter"]["forms"]) == (2, 1)
    assert rows["newsletter"]["forms_per_visit"] == 0.5
    assert rows["newsletter"]["calls_per_visit"] == 0.0
    assert (rows["google"]["visits"], rows["google"]["forms"]) == (1, 0)  # listed all the same


async def record_call(api: Api, client_id: str, session_id: str, e164: str) -> UUID:
    call_id = new_id()
    at = datetime.fromtimestamp(api.clock.now, UTC)
    async with CallJournal(api.db) as journal:
        journal.record(
            CallStarted(
                call_id=call_id,
                client_id=UUID(client_id),
                number_id=None,
                tracking_number=e164,
                caller_number="+447700900001",
                sip_call_id=f"{call_id}@c",
                trunk=None,
                dialplan="default",
                session_id=UUID(session_id),
                attribution={"source": "newsletter"},
                record=False,
                at=at,
            )
        )
        journal.record(CallEnded(call_id, "answered", "caller", "x", at))
        await journal.flushed()
    return call_id


async def test_the_read_api_shows_a_visit_its_journey_calls_and_forms(api: Api) -> None:
    client_id, pool = await pool_with_numbers(api)
    _, key = await api.client_with_key("Acme's agency")  # another client
    entry = await view(api, pool, NEWSLETTER, "https://mail.example.net/")
    api.clock.now += 30
    await view(api, pool, ORIGIN + "/contact", ORIGIN + "/offers")
    await view(api, pool, ORIGIN + "/?gclid=G", None, visitor="quiet")
    form = await api.call(
        "POST",
        "/v1/forms",
        json={
            "pool_key": pool["public_key"],
            "session_id": entry["session_id"],
            "form": "contact",
            "fields": {"email": "ann@example.com"},
        },
        headers={"Origin": ORIGIN},
    )
    call_id = await record_call(api, client_id, entry["session_id"], entry["number"]["e164"])

    detail = await api.ok("GET", f"/v1/sessions/{entry['session_id']}")
    assert detail["attribution"]["campaign"] == "dec"
    assert detail["touches"]["first"]["referrer"] == "https://mail.example.net/"
    assert [p["url"] for p in detail["journey"]] == [ORIGIN + "/offers", ORIGIN + "/contact"]
    assert detail["number"]["e164"] == entry["number"]["e164"]
    assert (detail["call_ids"], detail["form_ids"]) == ([str(call_id)], [form.body["id"]])

    listed = await api.ok("GET", f"/v1/sessions?pool_id={pool['id']}&source=newsletter")
    assert [s["id"] for s in listed["data"]] == [entry["session_id"]]
    called = await api.ok("GET", f"/v1/sessions?pool_id={pool['id']}&has_call=true")
    assert [s["id"] for s in called["data"]] == [entry["session_id"]]
    uncalled = await api.ok("GET", f"/v1/sessions?pool_id={pool['id']}&has_call=false")
    assert [s["attribution"]["source"] for s in uncalled["data"]] == ["google"]
    paged = await api.ok("GET", f"/v1/sessions?pool_id={pool['id']}&limit=1")
    assert len(paged["data"]) == 1 and paged["next_cursor"] is not None

    forms = await api.ok("GET", f"/v1/forms?session_id={entry['session_id']}")
    assert [f["fields"] for f in forms["data"]] == [{"email": "ann@example.com"}]
    one = await api.ok("GET", f"/v1/forms/{form.body['id']}")
    assert one["attribution"]["source"] == "newsletter" and one["form"] == "contact"

    call = await api.ok("GET", f"/v1/calls/{call_id}")
    assert [p["url"] for p in call["visit"]["journey"]] == [ORIGIN + "/offers", ORIGIN + "/contact"]
    assert call["visit"]["touches"]["first"]["utm_medium"] == "email"

    # Another client sees none of it, and cannot tell it exists.
    for path in (f"/v1/sessions/{entry['session_id']}", f"/v1/forms/{form.body['id']}"):
        assert (await api.call("GET", path, key)).status == 404
    assert (await api.ok("GET", "/v1/sessions", key))["data"] == []
    assert (await api.ok("GET", "/v1/forms", key))["data"] == []
    bad = await api.call("GET", "/v1/sessions?has_call=maybe", key)
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "has_call"
    assert (await api.call("GET", "/v1/sessions")).status == 401


async def test_touch_and_page_times_are_written_as_the_api_writes_times(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    entry = await view(api, pool, NEWSLETTER, None)
    detail = await api.ok("GET", f"/v1/sessions/{entry['session_id']}")
    at = datetime.fromtimestamp(api.clock.now, UTC).isoformat().replace("+00:00", "Z")
    assert detail["journey"][0]["at"] == detail["touches"]["first"]["at"] == at
    assert detail["created_at"] == at


async def test_bad_queries_and_page_views_get_problems_naming_the_field(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    for query, field in (
        ("from=yesterday", "from"),
        ("pool_id=not-a-uuid", "pool_id"),
        ("cursor=%00", "cursor"),
        ("limit=100000", "limit"),
        ("has_call=1", "has_call"),
        ("visitor=v1", "visitor"),
    ):
        reply = await api.call("GET", f"/v1/sessions?{query}", api.operator_key)
        assert reply.status == 422, (query, reply.body)
        assert reply.body["errors"][0]["field"] == field
    assert (await api.call("GET", "/v1/sessions/nope", api.operator_key)).status == 404
    assert (await api.call("GET", "/v1/forms?session_id=x", api.operator_key)).status == 422
    long_title = await api.call(
        "POST",
        "/v1/sessions",
        json={"pool_key": pool["public_key"], "page_url": ORIGIN + "/", "title": "t" * 1001},
        headers={"Origin": ORIGIN},
    )
    assert long_title.status == 422 and long_title.body["errors"][0]["field"] == "title"
    odd = await view(api, pool, ORIGIN + "/\u00e9t\u00e9?utm_source=%FF%FE", "javascript:x")
    facts = api.sessions.attribute(odd["number"]["e164"])
    assert facts is not None and "referrer" not in facts.facts
