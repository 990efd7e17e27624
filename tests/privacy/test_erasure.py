"""Erasure: by phone number, call or session, nothing of the subject is left anywhere, reports
stay true, and a second erasure is a receipt of zeros."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from callrouter.privacy.ledger import RightsLedger
from callrouter.vault import NoDataKey
from tests.privacy.conftest import (
    AUDIO,
    CALLER,
    OTHER_AUDIO,
    OTHER_CALLER,
    SPELLINGS,
    PrivacyApi,
    files_containing,
    find_everywhere,
    make_tenant,
)

# Forms carry the real time of their submission: the range covers any day the tests run.
REPORT = "/v1/reports/attribution?from=2026-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"


async def erase(api: PrivacyApi, key: str, subject: dict[str, str]) -> Any:
    return await api.ok(
        "POST", "/v1/privacy/requests", key, {"kind": "erasure", "subject": subject}
    )


async def reports(api: PrivacyApi, key: str) -> dict[str, Any]:
    return {by: await api.ok("GET", f"{REPORT}&by={by}", key) for by in ("source", "campaign")}


async def test_erasure_by_phone_leaves_the_number_and_the_audio_nowhere(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    r1, r1_path = tenant.recordings["r1"]
    copy = await asyncio.to_thread((api.recordings_dir / r1_path).read_bytes)
    before = await find_everywhere(api.db, SPELLINGS)
    assert any(hit.startswith("calls.caller_number") for hit in before)  # the search works
    assert any(hit.startswith("forms.fields") for hit in before)
    assert any(hit.startswith("webhook_deliveries.payload") for hit in before)
    reports_before = await reports(api, tenant.key)

    request = await erase(api, tenant.key, {"phone": "+44 7700 900123"})

    assert request["status"] == "done" and request["kind"] == "erasure"
    outcome = request["outcome"]
    assert outcome["receipt"] == {
        "calls": 2,  # c1, c2
        "recordings": 1,  # r1
        "sessions": 2,  # s1 and s2: the same visitor id
        "forms": 2,  # f1 (the caller's) and f3 (a stranger's naming the number)
        "webhook_deliveries": 3,  # call.completed of c1, form.submitted of f1 and f3
    }
    assert outcome["shredding"] == "done" and outcome["suppressions_removed"] == []
    assert "may be recorded, attributed and stored again" in outcome["notices"][0]
    assert "objection" in outcome["notices"][0]

    assert await find_everywhere(api.db, SPELLINGS) == []
    files = await asyncio.to_thread(
        files_containing, api.data_dir, (*(s.encode() for s in SPELLINGS), AUDIO[100:164])
    )
    assert files == []
    assert not (api.recordings_dir / r1_path).exists()
    # Crypto-shredded: a backup of the file taken before the erasure is noise now.
    await asyncio.to_thread((api.recordings_dir / "copy").write_bytes, copy)
    with pytest.raises(NoDataKey):
        await asyncio.to_thread(api.archive.decrypt, r1, api.recordings_dir / "copy")
    assert set(api.live.forgotten) == {UUID(tenant.sessions[s]) for s in ("s1", "s2")}

    # The other caller lost nothing, and the reports count what the caller did.
    assert any(
        OTHER_CALLER in hit or "07700 900456" in hit
        for hit in await find_everywhere(api.db, (OTHER_CALLER, "07700 900456"))
    )
    r3, r3_path = tenant.recordings["r3"]
    assert api.archive.decrypt(r3, api.recordings_dir / r3_path) == OTHER_AUDIO
    assert await reports(api, tenant.key) == reports_before


async def test_a_second_erasure_finds_nothing_and_says_so(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    await erase(api, tenant.key, {"phone": CALLER})
    again = await erase(api, tenant.key, {"phone": CALLER})
    assert again["status"] == "done"
    assert set(again["outcome"]["receipt"].values()) == {0}
    unknown = await erase(api, tenant.key, {"phone": "+447700900999"})
    assert set(unknown["outcome"]["receipt"].values()) == {0}
    for subject in ({"call_id": str(uuid4())}, {"session_id": str(uuid4())}):
        empty = await erase(api, tenant.key, subject)
        assert set(empty["outcome"]["receipt"].values()) == {0}
        assert empty["outcome"]["notices"] == []  # only a number can be on the list


async def test_erasure_by_call_takes_the_call_its_recording_and_its_visit(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    request = await erase(api, tenant.key, {"call_id": str(tenant.calls["c1"])})
    assert request["outcome"]["receipt"] == {
        "calls": 1,
        "recordings": 1,
        "sessions": 1,  # s1 only: a call is not its caller's whole history
        "forms": 1,  # f1, on s1
        "webhook_deliveries": 2,  # c1's call.completed, f1's form.submitted
    }
    remaining = await api.db.fetch(
        "SELECT id FROM calls WHERE client_id = $1 ORDER BY id", tenant.client
    )
    assert [r["id"] for r in remaining] == [tenant.calls["c2"], tenant.calls["c3"]]
    assert await api.db.fetchval("SELECT count(*) FROM recording_disposals") == 0
    assert api.archive.disposed == [tenant.recordings["r1"][0]]


async def test_erasure_by_session_takes_the_visit_its_forms_and_its_calls(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    request = await erase(api, tenant.key, {"session_id": tenant.sessions["s4"]})
    assert request["outcome"]["receipt"] == {
        "calls": 1,  # c3
        "recordings": 1,  # r3
        "sessions": 1,
        "forms": 1,  # f4
        "webhook_deliveries": 2,
    }
    assert await find_everywhere(api.db, (OTHER_CALLER, "07700 900456")) == []
    assert (
        await api.db.fetchval(
            "SELECT count(*) FROM sessions WHERE id = $1", UUID(tenant.sessions["s4"])
        )
        == 0
    )


async def test_erasure_records_an_audit_entry_without_personal_data(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    request = await erase(api, tenant.key, {"phone": CALLER})
    audit = await api.ok("GET", "/v1/privacy/audit?action=erasure", tenant.key)
    (entry,) = audit["data"]
    assert entry["actor"].startswith("key:")
    assert entry["request_id"] == request["id"]
    assert entry["subject_kind"] == "phone"
    assert entry["subject_hash"] == request["subject_hash"] and len(entry["subject_hash"]) == 64
    assert entry["counts"]["calls"] == 2 and entry["counts"]["recordings"] == 1
    assert CALLER not in str(audit) and "900123" not in str(audit)


async def test_the_routers_visits_of_an_erased_caller_are_forgotten(api: PrivacyApi) -> None:
    """With the router's own sessions as ``live_sessions`` (as serve wires them): the erased
    visits attribute no call, free their number, and the write-behind does not restore them."""
    tenant = await make_tenant(api)
    api.rights.live_sessions = api.sessions
    s1, s2 = UUID(tenant.sessions["s1"]), UUID(tenant.sessions["s2"])
    visit = await api.sessions.heartbeat(s2)  # s2 took over s1's lease: same visitor id
    assert visit is not None and visit.record.number is not None
    number = visit.record.number
    attribution = api.sessions.attribute(number)
    assert attribution is not None and attribution.session_id == s2

    await erase(api, tenant.key, {"phone": CALLER})

    assert await api.sessions.visit(s1) is None and await api.sessions.visit(s2) is None
    attribution = api.sessions.attribute(number)
    assert attribution is not None and attribution.session_id is None
    stored = await api.db.fetchval(
        "SELECT count(*) FROM sessions WHERE id = ANY($1::uuid[])", [s1, s2]
    )
    assert stored == 0
    others = [UUID(tenant.sessions[s]) for s in ("s3", "s4")]
    assert all([await api.sessions.visit(s) is not None for s in others])


async def test_an_erasure_is_carried_out_when_its_ledger_line_finds_the_disk_full(
    api: PrivacyApi, caplog: pytest.LogCaptureFixture
) -> None:
    """The rights ledger only guards a later restore: a full disk (/dev/full answers every
    write with ENOSPC) is logged, and the erasure itself is done all the same."""
    tenant = await make_tenant(api)
    api.rights.ledger = RightsLedger(Path("/dev/full"))
    request = await erase(api, tenant.key, {"phone": CALLER})
    assert request["status"] == "done"
    assert request["outcome"]["receipt"]["calls"] == 2
    assert "the rights ledger /dev/full could not be written (No space left on device)" in (
        caplog.text
    )
