"""Clients, numbers, pools and keys through the HTTP API, over a real database."""

from __future__ import annotations

from uuid import UUID

from tests.api.conftest import MAX_BODY, Api
from tests.api.recorded import started_call


async def test_number_lifecycle(api: Api) -> None:
    client_id, _ = await api.client_with_key("Acme")
    created = await api.ok(
        "POST",
        "/v1/numbers",
        json={
            "client_id": client_id,
            "e164": "+44 151 555 0001",
            "destination": "sip:reception@pbx.example.com",
            "record": True,
            "label": "Billboard M62",
            "source": "billboard",
        },
    )
    assert created["e164"] == "+441515550001"
    assert created["display"] == {"national": "0151 555 0001", "international": "+44 151 555 0001"}
    assert created["dialplan"] == "default"
    assert created["record"] is True

    number_id = created["id"]
    fetched = await api.ok("GET", f"/v1/numbers/{number_id}")
    assert fetched == created

    updated = await api.ok(
        "PATCH",
        f"/v1/numbers/{number_id}",
        json={"destination": "+44 20 7183 8750", "dialplan_params": {"secondary": "+442071838751"}},
    )
    assert updated["destination"] == "+442071838750"
    assert updated["dialplan_params"] == {"secondary": "+442071838751"}
    assert updated["label"] == "Billboard M62"

    assert (await api.call("DELETE", f"/v1/numbers/{number_id}", api.operator_key)).status == 204
    assert (await api.call("GET", f"/v1/numbers/{number_id}", api.operator_key)).status == 404


async def test_duplicate_number_is_409_and_names_the_field(api: Api) -> None:
    client_id, _ = await api.client_with_key("Acme")
    body = {"client_id": client_id, "e164": "+441515550001"}
    await api.ok("POST", "/v1/numbers", json=body)
    reply = await api.call("POST", "/v1/numbers", api.operator_key, {**body, "e164": "01515550001"})
    assert reply.status == 422  # national format without a region is refused, not guessed
    reply = await api.call("POST", "/v1/numbers", api.operator_key, body)
    assert reply.status == 409
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body["errors"] == [{"field": "e164", "reason": "already exists"}]


async def test_pagination_walks_every_item_once(api: Api) -> None:
    client_id, _ = await api.client_with_key("Acme")
    wanted = {f"+4415155500{i:02d}" for i in range(7)}
    for e164 in sorted(wanted):
        await api.ok("POST", "/v1/numbers", json={"client_id": client_id, "e164": e164})
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await api.ok("GET", f"/v1/numbers?{query}")
        assert len(page["data"]) <= 3
        seen += [n["e164"] for n in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(wanted)
    assert len(seen) == len(set(seen))


async def test_pool_holds_only_its_clients_numbers(api: Api) -> None:
    a, _ = await api.client_with_key("A")
    b, _ = await api.client_with_key("B")
    pool = await api.ok(
        "POST",
        "/v1/pools",
        json={"client_id": a, "name": "website", "allowed_origins": ["https://www.a.example"]},
    )
    assert pool["public_key"].startswith("pk_")
    assert pool["lease_hold_seconds"] == 1800
    reply = await api.call(
        "POST",
        "/v1/numbers",
        api.operator_key,
        {"client_id": b, "e164": "+441515550009", "pool_id": pool["id"]},
    )
    assert reply.status == 422
    assert reply.body["errors"] == [{"field": "pool_id", "reason": "does not exist"}]
    number = await api.ok(
        "POST", "/v1/numbers", json={"client_id": a, "e164": "+441515550009", "pool_id": pool["id"]}
    )
    listed = await api.ok("GET", f"/v1/numbers?pool_id={pool['id']}")
    assert [n["id"] for n in listed["data"]] == [number["id"]]
    assert (await api.call("DELETE", f"/v1/pools/{pool['id']}", api.operator_key)).status == 204
    assert (await api.ok("GET", f"/v1/numbers/{number['id']}"))["pool_id"] is None


async def test_bad_input_gets_clear_errors_and_changes_nothing(api: Api) -> None:
    client_id, client_key = await api.client_with_key("Acme")
    number = await api.ok(
        "POST", "/v1/numbers", json={"client_id": client_id, "e164": "+441515550001"}
    )
    path = f"/v1/numbers/{number['id']}"

    malformed = await api.call(
        "PATCH",
        path,
        client_key,
        data=b'{"record": tru',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status == 400
    assert malformed.body["errors"] == [{"field": "body", "reason": "malformed JSON"}]

    wrong_types = await api.call(
        "PATCH", path, client_key, {"record": "yes", "dialplan_params": [1], "label": 5}
    )
    assert wrong_types.status == 422
    assert {e["field"]: e["reason"] for e in wrong_types.body["errors"]} == {
        "record": "must be a boolean",
        "dialplan_params": "must be an object",
        "label": "must be a string",
    }

    bad_number = await api.call("PATCH", path, client_key, {"destination": "+44 151 555"})
    assert bad_number.status == 422
    assert bad_number.body["errors"][0]["field"] == "destination"

    not_json = await api.call(
        "PATCH",
        path,
        client_key,
        data=b"record=true",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert not_json.status == 415

    oversized = await api.call("PATCH", path, client_key, {"label": "x" * (MAX_BODY + 1)})
    assert oversized.status == 413

    unknown = await api.call("PATCH", path, client_key, {"colour": "red"})
    assert unknown.status == 422
    assert unknown.body["errors"] == [{"field": "colour", "reason": "unknown field"}]

    assert await api.ok("GET", path) == number


async def test_client_key_sees_only_its_own_client_and_cannot_use_operator_routes(api: Api) -> None:
    a, a_key = await api.client_with_key("A")
    await api.client_with_key("B")
    clients = await api.ok("GET", "/v1/clients", a_key)
    assert [c["id"] for c in clients["data"]] == [a]
    assert (await api.call("POST", "/v1/clients", a_key, {"name": "C"})).status == 403
    reply = await api.call("POST", "/v1/numbers", a_key, {"e164": "+441515550001"})
    assert reply.status == 403


async def test_keys_are_shown_once_stored_hashed_and_revocable(api: Api) -> None:
    client_id, _ = await api.client_with_key("Acme")
    created = await api.ok("POST", "/v1/keys", json={"client_id": client_id, "name": "ci"})
    secret = created["secret"]
    assert secret.startswith("crk_") and len(secret) > 40
    assert "secret" not in await api.ok("GET", f"/v1/keys/{created['id']}")
    stored = await api.db.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["id"])
    assert stored is not None
    assert secret.encode() not in b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in stored.values()
    )
    assert (await api.call("GET", "/v1/numbers", secret)).status == 200
    assert (await api.call("DELETE", f"/v1/keys/{created['id']}", secret)).status == 204
    reply = await api.call("GET", "/v1/numbers", secret)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_missing_or_unknown_key_is_401(api: Api) -> None:
    assert (await api.call("GET", "/v1/numbers")).status == 401
    assert (await api.call("GET", "/v1/numbers", "crk_" + "x" * 40)).status == 401
    assert (await api.call("GET", "/v1/health")).status == 200


async def test_rate_limit_answers_429_with_retry_after(database_dsn: str) -> None:
    from tests.api.conftest import running_api

    async with running_api(database_dsn, rate=0.001, burst=3) as api:
        statuses = [(await api.call("GET", "/v1/clients", api.operator_key)) for _ in range(4)]
        assert [r.status for r in statuses] == [200, 200, 200, 429]
        assert int(statuses[-1].headers["Retry-After"]) >= 1


async def test_unknown_route_and_method_are_problems(api: Api) -> None:
    missing = await api.call("GET", "/v1/nothing-here", api.operator_key)
    assert missing.status == 404
    assert missing.body["status"] == 404
    wrong = await api.call("PUT", "/v1/numbers", api.operator_key, {})
    assert wrong.status == 405
    assert "GET" in wrong.headers["Allow"]
    assert "Server" not in wrong.headers  # no banner, not even aiohttp's own


async def test_deleting_a_client_removes_its_keys_numbers_and_pools(api: Api) -> None:
    client_id, key = await api.client_with_key("Leaving Ltd")
    pool = await api.ok("POST", "/v1/pools", key, {"name": "site"})
    number = await api.ok(
        "POST", "/v1/numbers", json={"client_id": client_id, "e164": "+441515550077"}
    )
    client_key = (await api.ok("GET", "/v1/keys", key))["data"][0]
    for _ in range(2):
        await started_call(api, client_id, number)
    assert (await api.call("DELETE", f"/v1/clients/{client_id}", key)).status == 404
    assert (await api.call("DELETE", f"/v1/clients/{client_id}", api.operator_key)).status == 204
    # Audited as the operator key that did it, with how much personal data went.
    operator_key_id = await api.db.fetchval("SELECT id FROM api_keys WHERE client_id IS NULL")
    entries = await api.db.fetch(
        "SELECT actor, action, client_id, subject_hash, counts FROM privacy_audit "
        "WHERE action = 'client.deleted'"
    )
    assert [dict(e) for e in entries] == [
        {
            "actor": f"key:{operator_key_id}",
            "action": "client.deleted",
            "client_id": UUID(client_id),
            "subject_hash": None,
            "counts": {"calls": 2, "recordings": 0, "sessions": 0, "forms": 0},
        }
    ]
    assert (await api.call("DELETE", f"/v1/clients/{client_id}", api.operator_key)).status == 404
    for path in (
        f"/v1/clients/{client_id}",
        f"/v1/pools/{pool['id']}",
        f"/v1/numbers/{number['id']}",
        f"/v1/keys/{client_key['id']}",
    ):
        assert (await api.call("GET", path, api.operator_key)).status == 404, path
    assert (await api.call("GET", "/v1/clients", key)).status == 401  # its key went with it
