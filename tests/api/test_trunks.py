"""/v1/trunks: operator-only carrier settings, validated field by field.

That a change reaches a running router is shown end to end in tests/e2e/test_calls.py.
"""

from __future__ import annotations

from tests.api.conftest import Api

SBC = {
    "name": "carrier-a",
    "networks": ["192.0.2.0/24", "2001:db8::1"],
    "number_from": "to",
    "country": "US",
    "nat": True,
    "uri": "sip:gw.carrier-a.example;transport=tcp",
    "caller_id": "rewrite",
    "caller_id_number": "+1 202 555 0123",
}


async def test_a_trunk_round_trips_with_normalised_fields(api: Api) -> None:
    created = await api.ok("POST", "/v1/trunks", json=SBC)
    assert created["networks"] == ["192.0.2.0/24", "2001:db8::1/128"]
    assert created["caller_id_number"] == "+12025550123"
    assert (created["number_from"], created["country"], created["nat"]) == ("to", "US", True)
    assert await api.ok("GET", f"/v1/trunks/{created['id']}") == created
    assert created["keepalives"] is True  # on unless the carrier cannot take them
    changed = await api.ok("PATCH", f"/v1/trunks/{created['id']}", json={"caller_id": "withhold"})
    assert changed["caller_id"] == "withhold" and changed["name"] == "carrier-a"
    quiet = await api.ok("PATCH", f"/v1/trunks/{created['id']}", json={"keepalives": False})
    assert quiet["keepalives"] is False
    bad = await api.call(
        "PATCH", f"/v1/trunks/{created['id']}", api.operator_key, {"keepalives": "no"}
    )
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "keepalives"
    listed = await api.ok("GET", "/v1/trunks")
    assert [t["name"] for t in listed["data"]] == ["carrier-a"]
    reply = await api.call("DELETE", f"/v1/trunks/{created['id']}", api.operator_key)
    assert reply.status == 204
    assert (await api.call("GET", f"/v1/trunks/{created['id']}", api.operator_key)).status == 404


async def test_bad_fields_are_named(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/v1/trunks",
        api.operator_key,
        {"name": "x", "networks": ["192.0.2.0/24", "192.0.2.300"], "uri": "http://x"},
    )
    assert reply.status == 422
    fields = {e["field"]: e["reason"] for e in reply.body["errors"]}
    assert "networks[1]" in fields and "CIDR" in fields["networks[1]"]
    assert "SIP URI" in fields["uri"]
    rewrite = await api.call(
        "POST", "/v1/trunks", api.operator_key, {"name": "y", "caller_id": "rewrite"}
    )
    assert rewrite.status == 422 and rewrite.body["errors"][0]["field"] == "caller_id_number"
    await api.ok("POST", "/v1/trunks", json={"name": "z"})
    taken = await api.call("POST", "/v1/trunks", api.operator_key, {"name": "z"})
    assert taken.status == 409


async def test_switching_to_rewrite_needs_a_number_already_stored_or_given(api: Api) -> None:
    trunk = await api.ok("POST", "/v1/trunks", json={"name": "gw"})
    reply = await api.call(
        "PATCH", f"/v1/trunks/{trunk['id']}", api.operator_key, {"caller_id": "rewrite"}
    )
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "caller_id_number"
    ok = await api.ok(
        "PATCH",
        f"/v1/trunks/{trunk['id']}",
        json={"caller_id": "rewrite", "caller_id_number": "+441515550001"},
    )
    assert ok["caller_id"] == "rewrite"


async def test_client_keys_cannot_see_or_touch_trunks(api: Api) -> None:
    trunk = await api.ok("POST", "/v1/trunks", json={"name": "private"})
    _, key = await api.client_with_key("Acme")
    assert (await api.call("GET", "/v1/trunks", key)).status == 403
    assert (await api.call("POST", "/v1/trunks", key, {"name": "mine"})).status == 403
    assert (await api.call("GET", f"/v1/trunks/{trunk['id']}", key)).status == 404
    assert (await api.call("DELETE", f"/v1/trunks/{trunk['id']}", key)).status == 404
