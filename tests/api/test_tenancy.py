"""Tenancy: a client's key gets 404 for every other client's object on every route.

The routes are not listed by hand: the test walks the live OpenAPI document, so a route added
later is covered (or fails here if it has a path parameter this test cannot fill).
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from tests.api.conftest import Api
from tests.api.recorded import recorded_call, started_call

PARAM = re.compile(r"{(\w+)}")


async def make_tenant(api: Api, name: str, e164: str) -> dict[str, Any]:
    client_id, key = await api.client_with_key(name)
    pool = await api.ok("POST", "/v1/pools", key, {"name": "site"})
    number = await api.ok(
        "POST", "/v1/numbers", json={"client_id": client_id, "e164": e164, "pool_id": pool["id"]}
    )
    own_key = await api.ok("GET", "/v1/keys", key)
    await api.sessions.reload(UUID(pool["id"]))
    session = await api.ok(
        "POST",
        "/v1/sessions",
        None,
        {"pool_key": pool["public_key"], "page_url": "https://site.example/"},
    )
    form = await api.ok(
        "POST",
        "/v1/forms",
        None,
        {"pool_key": pool["public_key"], "session_id": session["session_id"], "form": "f"},
    )
    hook = await api.ok(
        "POST",
        "/v1/webhooks",
        key,
        {"url": "https://hooks.example/in", "events": ["call.completed"]},
    )
    # Operator data, not the tenant's: a client key must not learn it exists either.
    trunk = await api.ok("POST", "/v1/trunks", json={"name": f"carrier-{name.lower()}"})
    call_id = await started_call(api, client_id, number)
    # With the client's own key: the register, the suppression list and the audit log each
    # get an entry of this client's.
    request = await api.ok(
        "POST",
        "/v1/privacy/requests",
        key,
        {"kind": "objection", "subject": {"phone": "+447700900999"}},
    )
    suppressions = await api.ok("GET", "/v1/suppressions", key)
    audit = await api.ok("GET", "/v1/privacy/audit", key)
    recording, _ = await recorded_call(api, client_id, number)
    return {
        "call_id": call_id,
        "recording_id": recording.id,
        "key": key,
        "client_id": client_id,
        "pool_id": pool["id"],
        "number_id": number["id"],
        "key_id": own_key["data"][0]["id"],
        "session_id": session["session_id"],
        "form_id": form["id"],
        "webhook_id": hook["id"],
        "pool_key": pool["public_key"],
        "trunk_id": trunk["id"],
        "request_id": request["id"],
        "suppression_id": suppressions["data"][0]["id"],
        "audit_id": audit["data"][0]["id"],
        # swap.js builds belong to no tenant: one that is not the current build is a 404.
        "version": "0123456789abcdef",
    }


async def snapshot(api: Api, tenant: dict[str, Any]) -> list[Any]:
    paths = [
        f"/v1/clients/{tenant['client_id']}",
        f"/v1/pools/{tenant['pool_id']}",
        f"/v1/numbers/{tenant['number_id']}",
        f"/v1/keys/{tenant['key_id']}",
        f"/v1/recordings/{tenant['recording_id']}",
        f"/v1/calls/{tenant['call_id']}",
        f"/v1/privacy/requests/{tenant['request_id']}",
        f"/v1/clients/{tenant['client_id']}/retention",
    ]
    return [await api.ok("GET", path) for path in paths]


def minimal_body(operation: dict[str, Any]) -> dict[str, Any]:
    """A body that passes validation where that is simple (required booleans), so the route's
    answer is about the object, not the body."""
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    properties = schema.get("properties", {})
    return {
        name: True
        for name in schema.get("required", [])
        if properties.get(name, {}).get("type") == "boolean"
    }


async def test_every_route_hides_other_tenants_objects(api: Api) -> None:
    a = await make_tenant(api, "A", "+441515550001")
    b = await make_tenant(api, "B", "+441515550002")
    before = await snapshot(api, b)
    document = await api.ok("GET", "/v1/openapi.json")

    checked = 0
    for path, operations in document["paths"].items():
        params = PARAM.findall(path)
        for method, operation in operations.items():
            if not params:
                continue
            concrete = PARAM.sub(lambda m: str(b[m.group(1)]), path)
            body = minimal_body(operation) if "requestBody" in operation else None
            if "session_id" in params:
                # Public routes: A's own pool key cannot reach B's session.
                body = {"pool_key": a["pool_key"]}
            reply = await api.call(method.upper(), concrete, a["key"], body)
            assert reply.status == 404, (method, path, reply.status, reply.body)
            assert reply.body["status"] == 404
            checked += 1
    assert checked >= 10

    assert await snapshot(api, b) == before


async def test_lists_never_show_other_tenants_objects(api: Api) -> None:
    a = await make_tenant(api, "A", "+441515550001")
    b = await make_tenant(api, "B", "+441515550002")
    document = await api.ok("GET", "/v1/openapi.json")
    b_ids = {str(v) for k, v in b.items() if k not in ("key", "pool_key")}
    listed = 0
    for path, operations in document["paths"].items():
        listing = operations.get("get", {})
        parameters = listing.get("parameters", [])
        if "{" in path or not any(p["name"] == "limit" for p in parameters):
            continue
        if listing.get("x-operator-only"):
            assert (await api.call("GET", path, a["key"])).status == 403, path
            continue
        page = await api.ok("GET", path, a["key"])
        ids = {item["id"] for item in page["data"]}
        assert ids, path
        assert not ids & b_ids, path
        listed += 1
    assert listed >= 5
    report = await api.ok("GET", "/v1/reports/attribution", a["key"])
    assert sum(row["calls"] for row in report["rows"]) == 2  # A's two calls (one recorded) only
    other = await api.call("GET", f"/v1/reports/attribution?client_id={b['client_id']}", a["key"])
    assert other.status == 422


async def test_creating_for_another_client_is_refused(api: Api) -> None:
    a = await make_tenant(api, "A", "+441515550001")
    b = await make_tenant(api, "B", "+441515550002")
    for path, body in (
        ("/v1/pools", {"name": "x", "client_id": b["client_id"]}),
        ("/v1/keys", {"client_id": b["client_id"]}),
    ):
        reply = await api.call("POST", path, a["key"], body)
        assert reply.status == 422
        assert reply.body["errors"] == [{"field": "client_id", "reason": "unknown client"}]
    reply = await api.call(
        "PATCH", f"/v1/numbers/{a['number_id']}", a["key"], {"pool_id": b["pool_id"]}
    )
    assert reply.status == 422
    assert reply.body["errors"][0]["field"] == "pool_id"
