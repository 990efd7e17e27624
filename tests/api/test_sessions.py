"""The swap script's routes: sessions, CORS, heartbeats, forms, write-behind and restart."""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

import brotli
import pytest
from multidict import CIMultiDict

from callrouter.api.swap_script import SWAP_SCRIPT
from callrouter.routing.sessions import Sessions
from tests.api.conftest import Api, running_api
from tests.database_link import CuttableLink

ORIGIN = "https://www.acme.example"
PAGE = ORIGIN + "/dentist?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=abc"


async def pool_with_numbers(
    api: Api, count: int = 2, **settings: Any
) -> tuple[str, dict[str, Any]]:
    client_id, _ = await api.client_with_key("Acme")
    pool = await api.ok(
        "POST",
        "/v1/pools",
        json={
            "client_id": client_id,
            "name": "website",
            "allowed_origins": [ORIGIN],
            "target_numbers": ["+441515550999"],
            "form_fields": ["email"],
            "lease_hold_seconds": 60,
            "grace_seconds": 300,
            **settings,
        },
    )
    for i in range(count):
        await api.ok(
            "POST",
            "/v1/numbers",
            json={"client_id": client_id, "e164": f"+44151555010{i}", "pool_id": pool["id"]},
        )
    await api.sessions.reload(UUID(pool["id"]))  # serve does this on PostgreSQL's NOTIFY
    return client_id, pool


async def start(api: Api, pool: dict[str, Any], visitor: str | None = "v1", **extra: Any) -> Any:
    return await api.call(
        "POST",
        "/v1/sessions",
        json={"pool_key": pool["public_key"], "visitor_id": visitor, "page_url": PAGE, **extra},
        headers={"Origin": ORIGIN},
    )


async def test_a_session_gets_a_pool_number_in_every_format_the_page_needs(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    reply = await start(api, pool)
    assert reply.status == 201, reply.body
    assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
    number = reply.body["number"]
    assert number["e164"] in ("+441515550100", "+441515550101")
    assert number["national"].startswith("0151 555 010")
    assert (number["country_code"], number["trunk_prefix"]) == ("44", "0")
    assert reply.body["targets"][0]["nsn"] == "1515550999"
    assert reply.body["form_fields"] == ["email"]
    again = await start(api, pool)  # the same visitor on another page
    assert again.body["number"]["e164"] == number["e164"]
    other = await start(api, pool, visitor="v2")
    assert other.body["number"]["e164"] != number["e164"]


async def test_a_call_is_attributed_to_the_visit_then_to_the_pool_default(api: Api) -> None:
    _, pool = await pool_with_numbers(api, default_source="website-unknown")
    reply = await start(api, pool)
    e164 = reply.body["number"]["e164"]
    attribution = api.sessions.attribute(e164)
    assert attribution is not None
    assert str(attribution.session_id) == reply.body["session_id"]
    assert attribution.facts == {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "spring",
        "gclid": "abc",
        "landing_page": ORIGIN + "/dentist",
        "source": "google",
        "medium": "cpc",
        "campaign": "spring",
    }
    api.clock.now += 60 + 301  # past the hold and the grace
    late = api.sessions.attribute(e164)
    assert late is not None and late.session_id is None
    assert late.facts == {"source": "website-unknown"}
    assert api.sessions.attribute("+441515550999") is None  # not a pool number


async def test_bad_requests_get_clear_errors(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    wrong_origin = await api.call(
        "POST",
        "/v1/sessions",
        json={"pool_key": pool["public_key"], "page_url": PAGE},
        headers={"Origin": "https://evil.example"},
    )
    assert wrong_origin.status == 403
    assert "https://evil.example may not use this pool" in wrong_origin.body["detail"]
    assert wrong_origin.headers["Access-Control-Allow-Origin"] == "https://evil.example"
    unknown = await api.call("POST", "/v1/sessions", json={"pool_key": "pk_nope", "page_url": PAGE})
    assert unknown.status == 404
    missing = await api.call("POST", "/v1/sessions", json={"pool_key": pool["public_key"]})
    assert missing.status == 422 and missing.body["errors"][0]["field"] == "page_url"
    malformed = await api.call(
        "POST",
        "/v1/sessions",
        data=b"{not json",
        headers={"Content-Type": "application/json", "Origin": ORIGIN},
    )
    assert malformed.status == 400
    huge = await api.call(
        "POST",
        "/v1/sessions",
        json={"pool_key": pool["public_key"], "page_url": "x" * 40_000},
        headers={"Origin": ORIGIN},
    )
    assert huge.status == 413


async def test_preflight_is_answered_for_any_page(api: Api) -> None:
    reply = await api.call(
        "OPTIONS",
        "/v1/sessions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Methods"] == "POST"
    assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_forms_keep_only_the_listed_fields_with_the_visits_attribution(api: Api) -> None:
    client_id, pool = await pool_with_numbers(api)
    session = (await start(api, pool)).body
    reply = await api.call(
        "POST",
        "/v1/forms",
        json={
            "pool_key": pool["public_key"],
            "session_id": session["session_id"],
            "form": "contact",
            "page_url": ORIGIN + "/contact",
            "fields": {"email": "ann@example.com", "card_number": "4111111111111111"},
        },
        headers={"Origin": ORIGIN},
    )
    assert reply.status == 201, reply.body
    row = await api.db.fetchrow("SELECT * FROM forms WHERE id = $1", reply.body["id"])
    assert row is not None
    assert row["fields"] == {"email": "ann@example.com"}
    assert row["attribution"]["utm_campaign"] == "spring"
    assert str(row["client_id"]) == client_id


async def test_heartbeats_keep_the_lease_and_a_restart_brings_it_back(api: Api) -> None:
    _, pool = await pool_with_numbers(api)
    session = (await start(api, pool)).body
    api.clock.now += 50
    touched = await api.call(
        "POST",
        f"/v1/sessions/{session['session_id']}/heartbeat",
        json={"pool_key": pool["public_key"]},
        headers={"Origin": ORIGIN},
    )
    assert touched.status == 200
    # A new process: pools and the live lease come back from PostgreSQL.
    restarted = Sessions(api.db, api.clock)
    assert await restarted.load() == 1
    api.clock.now += 55  # past the first hold, within the one the heartbeat renewed
    attribution = restarted.attribute(session["number"]["e164"])
    assert attribution is not None and str(attribution.session_id) == session["session_id"]
    ended = await api.call(
        "POST",
        f"/v1/sessions/{session['session_id']}/end",
        json={"pool_key": pool["public_key"]},
        headers={"Origin": ORIGIN},
    )
    assert ended.status == 204


@pytest.mark.parametrize("route", ["heartbeat", "end"])
async def test_a_heartbeats_body_is_read_whatever_its_spelling_and_refused_by_field(
    api: Api, route: str
) -> None:
    """The usual body takes a shortcut past the decoder and schema; every other spelling of a
    valid body still works and every invalid one gets the answer the general path gives."""
    _, pool = await pool_with_numbers(api)
    session = (await start(api, pool)).body
    key = pool["public_key"]
    path = f"/v1/sessions/{session['session_id']}/{route}"

    async def send(raw: bytes) -> Any:
        return await api.call(
            "POST",
            path,
            data=raw,
            headers={"Content-Type": "application/json", "Origin": ORIGIN},
        )

    ok = 204 if route == "end" else 200
    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
    for valid in (
        f'{{"pool_key": "{key}"}}',
        f' \r\n\t{{ "pool_key" :"{key}"\n}} \n',
        f'{{"pool_key": "{escaped}"}}',  # the general decoder's spelling of the same key
    ):
        reply = await send(valid.encode())
        assert reply.status == ok, (valid, reply.body)
    for invalid, status, field in (
        # A form feed is whitespace to a regular expression's \s, not to JSON.
        (f'\x0c{{"pool_key": "{key}"}}', 400, "body"),
        (f'{{"pool_key": "{key}"}}\x0b', 400, "body"),
        (f'{{"pool_key": "{key}", "pool_key2": 1}}', 422, "pool_key2"),
        ('{"pool_key": 5}', 422, "pool_key"),
        ('{"pool_key": "' + "k" * 65 + '"}', 422, "pool_key"),
        ("{}", 422, "pool_key"),
        (f'{{"pool_key": "{key}"', 400, "body"),
        ('{"pool_key": "\\ud800"}', 422, "pool_key"),
    ):
        reply = await send(invalid.encode())
        assert reply.status == status, (invalid, reply.body)
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert [e["field"] for e in reply.body["errors"]] == [field], (invalid, reply.body)
    # A key the shortcut's pattern takes but no pool has: the pool's answer, not the body's.
    unknown = await send(b'{"pool_key": "pk_no_such_pool"}')
    assert unknown.status == 404


async def test_the_swap_script_is_compressed_revalidated_and_pinned(api: Api) -> None:
    async def get(path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        async with api.http.get(path, headers=headers, auto_decompress=False) as response:
            return response.status, response.headers.copy(), await response.read()

    source = (await get("/v1/swap.js", **{"Accept-Encoding": "identity"}))[2]
    assert b"callrouter swap script" in source
    status, headers, body = await get("/v1/swap.js", **{"Accept-Encoding": "gzip, deflate"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert gzip.decompress(body) == source and len(body) < len(source) / 2
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert headers["Vary"] == "Accept-Encoding" and headers["Access-Control-Allow-Origin"] == "*"
    status, br_headers, body = await get("/v1/swap.js", **{"Accept-Encoding": "gzip, br"})
    assert (status, br_headers["Content-Encoding"]) == (200, "br")
    assert brotli.decompress(body) == source
    refused = await get("/v1/swap.js", **{"Accept-Encoding": "br;q=0, gzip;q=0"})
    assert "Content-Encoding" not in refused[1] and refused[2] == source
    # Revalidation: the ETag it was given gets a 304 with no body, in any encoding.
    for tag in (headers["ETag"], br_headers["ETag"], "W/" + headers["ETag"]):
        status, again, body = await get(
            "/v1/swap.js", **{"Accept-Encoding": "gzip", "If-None-Match": f'"old", {tag}'}
        )
        assert (status, body) == (304, b""), tag
        assert again["ETag"] == headers["ETag"]
    assert (await get("/v1/swap.js", **{"If-None-Match": '"swap-1"'}))[0] == 200

    # The versioned URL the pool publishes, with the integrity hash browsers check.
    _, pool = await pool_with_numbers(api)
    pinned = pool["swap_script"]
    digest = base64.b64encode(hashlib.sha384(source).digest()).decode()
    assert pinned["integrity"] == "sha384-" + digest
    assert f'integrity="sha384-{digest}"' in pinned["tag"]
    assert pool["public_key"] in pinned["tag"]
    status, headers, body = await get(pinned["src"], **{"Accept-Encoding": "identity"})
    assert (status, body) == (200, source)
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert (await get("/v1/swap/0123456789abcdef.js"))[0] == 404
    assert (await get("/v1/swap/..%2Fswap.js"))[0] == 404


async def test_pool_statistics_count_leases_peaks_and_exhaustions(api: Api) -> None:
    _, pool = await pool_with_numbers(api, count=1, exhaustion_policy="default_number")
    await start(api, pool, visitor="v1")
    exhausted = await start(api, pool, visitor="v2")
    assert exhausted.status == 201 and exhausted.body["number"] is None  # no default number set
    figures = await api.ok("GET", f"/v1/pools/{pool['id']}/stats")
    assert figures == {
        "size": 1,
        "leased": 1,
        "peak": 1,
        "exhaustions": 1,
        "recommended_size": 3,  # two visits at once, plus a quarter, rounded up
    }


def test_the_readme_publishes_the_shipped_scripts_integrity_hash() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f'integrity="{SWAP_SCRIPT.integrity}"' in readme, "update the README's swap.js tag"
    assert SWAP_SCRIPT.path in readme


async def test_with_the_database_away_new_visits_get_503_and_open_pages_keep_their_lease(
    database_dsn: str, tmp_path: Path
) -> None:
    """A lease given without the database could be given twice (by two nodes): a new visit is
    refused with 503 problem+json and Retry-After; a page already holding a lease keeps it."""
    async with CuttableLink(database_dsn, tmp_path) as link, running_api(link.dsn) as api:
        _, pool = await pool_with_numbers(api)
        session = (await start(api, pool)).body
        await link.cut()
        refused = await start(api, pool, visitor="v2")
        assert refused.status == 503, refused.body
        assert refused.body["status"] == 503 and "Retry-After" in refused.headers
        api.clock.now += 50
        touched = await api.call(
            "POST",
            f"/v1/sessions/{session['session_id']}/heartbeat",
            json={"pool_key": pool["public_key"]},
            headers={"Origin": ORIGIN},
        )
        assert touched.status == 200
        assert touched.body["lease_expires_at"] > session["lease_expires_at"]
        await link.mend()


async def test_the_access_log_sees_every_answer_of_the_front_door(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # Preflights, problems with the page's origin on them, and unknown paths are answered in
    # the one middleware; each still leaves its line with the final status.
    _, pool = await pool_with_numbers(api)
    caplog.set_level(logging.INFO, logger="callrouter.access")
    preflight = await api.call("OPTIONS", "/v1/sessions", headers={"Origin": ORIGIN})
    refused = await api.call(
        "POST",
        "/v1/sessions",
        json={"pool_key": pool["public_key"], "page_url": PAGE},
        headers={"Origin": "https://evil.example"},
    )
    unknown = await api.call("GET", "/v1/no-such-route")
    assert (preflight.status, refused.status, unknown.status) == (204, 403, 404)
    assert refused.headers["Access-Control-Allow-Origin"] == "https://evil.example"
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert "Access-Control-Allow-Origin" not in unknown.headers
    lines = [
        (r.method, r.route, r.status)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "callrouter.access"
    ]
    assert lines == [
        ("OPTIONS", "unmatched", 204),  # no route has OPTIONS: the front door answers it
        ("POST", "/v1/sessions", 403),
        ("GET", "unmatched", 404),
    ]
