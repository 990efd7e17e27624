"""The request register over the API: objection and consent withdrawal, bad input, tenancy,
due dates and overdue requests, requests carried out later, rectification, retention settings."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from openapi_spec_validator import validate

from callrouter.privacy.subjects import Subject
from callrouter.privacy.suppression import CHANNEL, UNRESTRICTED, CallerTreatment
from tests.privacy.conftest import CALLER, NOW, OTHER_CALLER, SPELLINGS, PrivacyApi, make_tenant

REQUESTS = "/v1/privacy/requests"


async def file(api: PrivacyApi, key: str, kind: str, subject: dict[str, str], **more: Any) -> Any:
    return await api.ok("POST", REQUESTS, key, {"kind": kind, "subject": subject, **more})


class Notified:
    """Waits for the next change of the suppression list to reach the API's listener."""

    def __init__(self, api: PrivacyApi) -> None:
        self.api = api
        self.event = asyncio.Event()

    async def __aenter__(self) -> Notified:
        await self.api.listener.add_listener(CHANNEL, self._seen)
        return self

    def _seen(self, *_args: object) -> None:
        self.event.set()

    async def __aexit__(self, *_exc: object) -> None:
        # The list's own callback was registered first, so it has applied the change too.
        await asyncio.wait_for(self.event.wait(), timeout=10)
        await self.api.listener.remove_listener(CHANNEL, self._seen)


async def test_an_objection_suppresses_the_number_and_an_erasure_lifts_it_saying_so(
    api: PrivacyApi,
) -> None:
    tenant = await make_tenant(api)
    list_ = api.rights.suppressions
    assert list_.treatment(tenant.client, CALLER) == UNRESTRICTED
    async with Notified(api):
        objection = await file(api, tenant.key, "objection", {"phone": "+44 7700 900123"})
    assert objection["status"] == "done"
    assert objection["outcome"]["suppression"] == "added"
    assert "no longer recorded" in objection["outcome"]["notices"][0]
    assert list_.treatment(tenant.client, CALLER) == CallerTreatment(True, False)
    entries = await api.ok("GET", "/v1/suppressions", tenant.key)
    (entry,) = entries["data"]
    assert entry["reason"] == "objection" and entry["subject_hash"] == objection["subject_hash"]
    assert entry["request_id"] == objection["id"]
    assert all(s not in str(entries) for s in SPELLINGS)  # a keyed hash, never the number
    again = await file(api, tenant.key, "objection", {"phone": CALLER})
    assert again["outcome"]["suppression"] == "already listed"

    async with Notified(api):
        erasure = await file(api, tenant.key, "erasure", {"phone": CALLER})
    assert erasure["outcome"]["suppressions_removed"] == ["objection"]
    notice = erasure["outcome"]["notices"][0]
    assert "removed the number from the suppression list" in notice
    assert "may be recorded, attributed and stored again" in notice
    assert "file an objection" in notice
    assert (await api.ok("GET", "/v1/suppressions", tenant.key))["data"] == []
    assert list_.treatment(tenant.client, CALLER) == UNRESTRICTED


async def test_consent_withdrawal_stops_recording_only(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    async with Notified(api):
        done = await file(api, tenant.key, "consent_withdrawal", {"phone": OTHER_CALLER})
    assert done["outcome"]["reason"] == "recording_consent_withdrawn"
    assert "never recorded" in done["outcome"]["notices"][0]
    treatment = api.rights.suppressions.treatment(tenant.client, OTHER_CALLER)
    assert treatment == CallerTreatment(suppressed=False, record_allowed=False)
    assert api.rights.suppressions.treatment(tenant.client, CALLER) == UNRESTRICTED
    other_client = uuid4()
    assert api.rights.suppressions.treatment(other_client, OTHER_CALLER) == UNRESTRICTED
    reply = await api.call(
        "POST", REQUESTS, tenant.key, {"kind": "objection", "subject": {"call_id": str(uuid4())}}
    )
    assert reply.status == 422
    assert reply.body["errors"] == [
        {
            "field": "subject",
            "reason": "must be a phone number for an objection or a consent withdrawal",
        }
    ]


async def test_bad_subjects_get_a_clear_error_naming_the_field(api: PrivacyApi) -> None:
    _, key = await api.client_with_key("Acme")
    cases = [
        ({"phone": "0151 555 0001"}, "subject.phone", "not in international format"),
        ({"phone": "+44 12"}, "subject.phone", "not a possible phone number"),
        ({"phone": "call me"}, "subject.phone", "not a phone number"),
        ({"phone": 441515550001}, "subject.phone", "must be a string"),
        ({"call_id": "nope"}, "subject.call_id", "must be a UUID"),
        ({"email": "a@b.example"}, "subject.email", "unknown field"),
        ({}, "subject", "must name exactly one of phone, call_id, session_id"),
        ({"phone": CALLER, "call_id": str(uuid4())}, "subject", "must name exactly one"),
    ]
    for subject, field, reason in cases:
        reply = await api.call("POST", REQUESTS, key, {"kind": "erasure", "subject": subject})
        assert reply.status == 422, subject
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert reply.body["errors"][0]["field"] == field, reply.body
        assert reason in reply.body["errors"][0]["reason"], reply.body
    reply = await api.call("POST", REQUESTS, key, {"kind": "forget", "subject": {"phone": CALLER}})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "kind"
    assert (await api.ok("GET", REQUESTS, key))["data"] == []  # nothing was registered


async def test_one_client_can_never_erase_or_export_anothers_data(api: PrivacyApi) -> None:
    a = await make_tenant(api, "A", "+44151555010")
    b = await make_tenant(api, "B", "+44151555020")
    b_before = await api.db.fetchval("SELECT count(*) FROM calls WHERE client_id = $1", b.client)

    # Naming B as the owner is refused like any unknown client.
    reply = await api.call(
        "POST",
        REQUESTS,
        a.key,
        {"kind": "erasure", "subject": {"phone": CALLER}, "client_id": b.client_id},
    )
    assert reply.status == 422
    assert reply.body["errors"] == [{"field": "client_id", "reason": "unknown client"}]
    # B's call and session ids mean nothing to A: an empty receipt, B untouched.
    for subject in ({"call_id": str(b.calls["c1"])}, {"session_id": b.sessions["s1"]}):
        request = await file(api, a.key, "erasure", subject)
        assert set(request["outcome"]["receipt"].values()) == {0}
    # The same caller number at A erases A's calls only.
    await file(api, a.key, "erasure", {"phone": CALLER})
    after = await api.db.fetchval("SELECT count(*) FROM calls WHERE client_id = $1", b.client)
    assert after == b_before == 3

    b_access = await file(api, b.key, "access", {"phone": CALLER})
    for method, path, body in (
        ("GET", f"{REQUESTS}/{b_access['id']}", None),
        ("POST", f"{REQUESTS}/{b_access['id']}/export", {"subject": {"phone": CALLER}}),
        ("POST", f"{REQUESTS}/{b_access['id']}/fulfil", {"subject": {"phone": CALLER}}),
        ("GET", f"/v1/clients/{b.client_id}/retention", None),
        ("PATCH", f"/v1/clients/{b.client_id}/retention", {"data_retention_days": 1}),
    ):
        reply = await api.call(method, path, a.key, body)
        assert reply.status == 404, (method, path, reply.body)
    for path in (REQUESTS, "/v1/suppressions", "/v1/privacy/audit"):
        page = await api.ok("GET", path, a.key)
        assert all(item.get("client_id") == a.client_id for item in page["data"]), path
    assert (await api.ok("GET", f"/v1/clients/{b.client_id}/retention"))[
        "data_retention_days"
    ] is None


async def test_the_register_lists_open_and_overdue_requests_by_due_date(api: PrivacyApi) -> None:
    _, key = await api.client_with_key("Acme")
    late = await file(
        api,
        key,
        "erasure",
        {"phone": CALLER},
        received_at="2026-10-01T10:00:00Z",
        carry_out=False,
    )
    assert late["status"] == "open" and late["due_at"] == "2026-10-31T10:00:00Z"
    assert late["overdue"] is True  # NOW is 2026-11-23
    recent = await file(api, key, "access", {"phone": OTHER_CALLER})
    assert recent["received_at"] == "2026-11-23T09:00:00Z"
    assert recent["due_at"] == "2026-12-23T09:00:00Z" and recent["overdue"] is False
    done = await file(api, key, "objection", {"phone": "+447700900789"})

    async def ids(status: str) -> list[str]:
        page = await api.ok("GET", f"{REQUESTS}?status={status}", key)
        return [r["id"] for r in page["data"]]

    assert await ids("open") == [late["id"], recent["id"]]
    assert await ids("overdue") == [late["id"]]
    assert await ids("done") == [done["id"]]
    api.wall.now = NOW + timedelta(days=31)
    assert await ids("overdue") == [late["id"], recent["id"]]

    reply = await api.call(
        "POST",
        REQUESTS,
        key,
        {"kind": "erasure", "subject": {"phone": CALLER}, "received_at": "2027-06-01T00:00:00Z"},
    )
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "received_at"


async def test_a_request_registered_open_is_carried_out_later_with_its_subject(
    api: PrivacyApi,
) -> None:
    tenant = await make_tenant(api)
    request = await file(api, tenant.key, "erasure", {"phone": CALLER}, carry_out=False)
    assert request["status"] == "open" and request["outcome"] is None
    assert await api.db.fetchval("SELECT count(*) FROM calls") == 3  # nothing erased yet
    fulfil = f"{REQUESTS}/{request['id']}/fulfil"
    wrong = await api.call("POST", fulfil, tenant.key, {"subject": {"phone": OTHER_CALLER}})
    assert wrong.status == 422
    assert wrong.body["errors"] == [
        {"field": "subject", "reason": "is not the subject of this request"}
    ]
    missing = await api.call("POST", fulfil, tenant.key, {})
    assert missing.status == 422 and missing.body["errors"][0]["field"] == "subject"
    done = await api.ok("POST", fulfil, tenant.key, {"subject": {"phone": "+44 7700 900123"}})
    assert done["status"] == "done" and done["outcome"]["receipt"]["calls"] == 2
    again = await api.call("POST", fulfil, tenant.key, {"subject": {"phone": CALLER}})
    assert again.status == 409
    fetched = await api.ok("GET", f"{REQUESTS}/{request['id']}", tenant.key)
    assert fetched == done


async def test_rectification_corrects_the_subjects_fields_with_an_audit_record(
    api: PrivacyApi,
) -> None:
    tenant = await make_tenant(api)
    c2, f1 = tenant.calls["c2"], tenant.forms["f1"]
    request = await file(
        api,
        tenant.key,
        "rectification",
        {"phone": CALLER},
        corrections=[
            {"call_id": str(c2), "caller_number": "+44 7700 900124"},
            {"form_id": f1, "fields": {"name": "Jane Smith", "phone": None}},
        ],
    )
    assert request["outcome"] == {"corrected": {"calls": 1, "forms": 1, "fields": 3}}
    call = await api.ok("GET", f"/v1/calls/{c2}", tenant.key)
    assert call["caller_number"] == "+447700900124"
    fields = await api.db.fetchval("SELECT fields FROM forms WHERE id = $1", UUID(f1))
    assert fields == {"name": "Jane Smith"}
    payload = await api.db.fetchval(
        "SELECT payload FROM webhook_deliveries WHERE payload->'data'->>'form_id' = $1", f1
    )
    assert payload["data"]["fields"] == {"name": "Jane Smith"}
    (entry,) = (await api.ok("GET", "/v1/privacy/audit?action=rectification", tenant.key))["data"]
    assert entry["counts"] == {"calls": 1, "forms": 1, "fields": 3}
    assert "Jane" not in str(entry) and "900124" not in str(entry)

    # Someone else's call (c3) is not the subject's to correct; nothing changes then.
    reply = await api.call(
        "POST",
        REQUESTS,
        tenant.key,
        {
            "kind": "rectification",
            "subject": {"phone": CALLER},
            "corrections": [
                {"form_id": f1, "fields": {"name": "X"}},
                {"call_id": str(tenant.calls["c3"]), "caller_number": None},
            ],
        },
    )
    assert reply.status == 422
    assert reply.body["errors"] == [
        {"field": "corrections[1].call_id", "reason": "is not one of this subject's calls"}
    ]
    fields = await api.db.fetchval("SELECT fields FROM forms WHERE id = $1", UUID(f1))
    assert fields == {"name": "Jane Smith"}
    for corrections, field in (
        ([], "corrections"),
        ([{"call_id": str(c2)}], "corrections[0].caller_number"),
        ([{"call_id": str(c2), "caller_number": "0151"}], "corrections[0].caller_number"),
        ([{"form_id": f1}], "corrections[0].fields"),
        ([{"form_id": f1, "call_id": str(c2)}], "corrections[0]"),
    ):
        reply = await api.call(
            "POST",
            REQUESTS,
            tenant.key,
            {"kind": "rectification", "subject": {"phone": CALLER}, "corrections": corrections},
        )
        assert reply.status == 422 and reply.body["errors"][0]["field"] == field, reply.body


async def test_retention_periods_are_set_per_client_over_the_defaults(api: PrivacyApi) -> None:
    client_id, key = await api.client_with_key("Acme")
    path = f"/v1/clients/{client_id}/retention"
    assert await api.ok("GET", path, key) == {
        "client_id": client_id,
        "recordings_retention_days": None,
        "data_retention_days": None,
        "effective_recordings_retention_days": 365,
        "effective_data_retention_days": 730,
    }
    changed = await api.ok("PATCH", path, key, {"recordings_retention_days": 30})
    assert changed["effective_recordings_retention_days"] == 30
    assert changed["effective_data_retention_days"] == 730
    reset = await api.ok("PATCH", path, key, {"recordings_retention_days": None})
    assert reset["effective_recordings_retention_days"] == 365
    reply = await api.call("PATCH", path, key, {"data_retention_days": 0})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "data_retention_days"


async def test_the_subject_hash_is_keyed_per_client(api: PrivacyApi) -> None:
    a, key_a = await api.client_with_key("A")
    b, key_b = await api.client_with_key("B")
    at_a = await file(api, key_a, "objection", {"phone": CALLER})
    at_b = await file(api, key_b, "objection", {"phone": CALLER})
    assert at_a["subject_hash"] != at_b["subject_hash"]
    assert at_a["subject_hash"] == api.rights.hasher.digest(UUID(a), Subject.phone(CALLER)).hex()
    assert UUID(b) != UUID(a)


async def test_the_privacy_routes_are_documented_and_say_what_erasure_means(
    api: PrivacyApi,
) -> None:
    document = await api.ok("GET", "/v1/openapi.json")
    validate(document)
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {
        (route.method, route.resource.canonical)
        for route in api.http.server.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert documented == served
    assert ("POST", REQUESTS + "/{request_id}/export") in served
    create = document["paths"][REQUESTS]["post"]
    assert "may be recorded, attributed and stored again" in create["description"]
    assert "file an objection" in create["description"]
    subject = create["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert subject["subject"]["properties"].keys() == {"phone", "call_id", "session_id"}
