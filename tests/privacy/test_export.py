"""The access export: everything held about the subject in one zip, indexed, streamed, with the
recording's audio as it was recorded."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any
from uuid import UUID

from callrouter.privacy.erasure import find_subject_rows
from callrouter.privacy.export import write_export
from callrouter.privacy.subjects import Subject
from tests.privacy.conftest import (
    AUDIO,
    CALLER,
    T0,
    PrivacyApi,
    add_recording,
    make_tenant,
    record_call,
)

REQUESTS = "/v1/privacy/requests"


async def download(api: PrivacyApi, key: str, request_id: str, subject: dict[str, str]) -> Any:
    async with api.http.post(
        f"{REQUESTS}/{request_id}/export",
        json={"subject": subject},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        return response.status, dict(response.headers), await response.read()


async def test_the_export_holds_the_callers_calls_visits_forms_and_audio(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    request = await api.ok(
        "POST", REQUESTS, tenant.key, {"kind": "access", "subject": {"phone": CALLER}}
    )
    assert request["status"] == "open"  # until the export is downloaded

    status, headers, body = await download(api, tenant.key, request["id"], {"phone": CALLER})

    assert status == 200, body[:500]
    assert headers["Content-Type"] == "application/zip"
    assert headers.get("Transfer-Encoding") == "chunked"  # streamed, not built in memory
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    index = json.loads(archive.read("index.json"))
    assert index["format"] == "callrouter-export/1"
    assert index["subject"] == {"kind": "phone", "value": CALLER}
    listed = {(item["type"], item.get("id")): item for item in index["items"]}
    r1 = tenant.recordings["r1"][0]
    expected = {
        *(("call", str(tenant.calls[c])) for c in ("c1", "c2")),
        *(("session", tenant.sessions[s]) for s in ("s1", "s2")),
        *(("form", tenant.forms[f]) for f in ("f1", "f3")),
        ("recording", str(r1)),
    }
    assert {key for key in listed if key[1] is not None} == expected
    assert {t for t, i in listed if i is None} == {"readme", "suppression", "requests", "audit"}
    for item in index["items"]:
        data = archive.read(item["path"])
        assert len(data) == item["bytes"]
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
    assert set(archive.namelist()) == {i["path"] for i in index["items"]} | {"index.json"}

    assert archive.read(f"recordings/{r1}.flac") == AUDIO
    c1 = json.loads(archive.read(f"calls/{tenant.calls['c1']}.json"))
    assert c1["caller_number"] == CALLER
    assert c1["session_id"] == tenant.sessions["s1"]
    assert c1["attribution"]["utm_campaign"] == "spring"
    assert c1["recordings"][0]["file"] == f"recordings/{r1}.flac"
    f1 = json.loads(archive.read(f"forms/{tenant.forms['f1']}.json"))
    assert f1["fields"] == {"phone": "07700 900123", "name": "Jane Doe"}
    history = json.loads(archive.read("requests.json"))
    assert [r["id"] for r in history] == [request["id"]]

    done = await api.ok("GET", f"{REQUESTS}/{request['id']}", tenant.key)
    assert done["status"] == "done"
    assert done["outcome"]["export"]["calls"] == 2
    assert done["outcome"]["export"]["recordings"] == 1
    assert done["outcome"]["export"]["audio_bytes"] == len(AUDIO)
    (entry,) = (await api.ok("GET", "/v1/privacy/audit?action=export", tenant.key))["data"]
    assert entry["request_id"] == request["id"] and entry["counts"]["forms"] == 2


async def test_an_export_needs_its_own_subject_and_an_access_request(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    access = await api.ok(
        "POST", REQUESTS, tenant.key, {"kind": "access", "subject": {"phone": CALLER}}
    )
    status, _, body = await download(api, tenant.key, access["id"], {"phone": "+447700900999"})
    assert status == 422 and json.loads(body)["errors"][0]["field"] == "subject"
    objection = await api.ok(
        "POST", REQUESTS, tenant.key, {"kind": "objection", "subject": {"phone": CALLER}}
    )
    status, _, body = await download(api, tenant.key, objection["id"], {"phone": CALLER})
    assert status == 409


async def test_an_unknown_subject_gets_a_valid_empty_export(api: PrivacyApi) -> None:
    tenant = await make_tenant(api)
    subject = {"call_id": "01890000-0000-7000-8000-000000000000"}
    access = await api.ok("POST", REQUESTS, tenant.key, {"kind": "access", "subject": subject})
    status, _, body = await download(api, tenant.key, access["id"], subject)
    assert status == 200
    index = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("index.json"))
    assert index["counts"]["calls"] == index["counts"]["recordings"] == 0
    assert {item["type"] for item in index["items"]} == {
        "readme",
        "suppression",
        "requests",
        "audit",
    }


async def test_a_large_recording_is_streamed_in_small_pieces(api: PrivacyApi) -> None:
    client_id, _ = await api.client_with_key("Acme")
    client = UUID(client_id)
    call_id = await record_call(api, client, CALLER, at=T0)
    big = os.urandom(3 * 1024 * 1024)
    await add_recording(api, client, call_id, big, T0)
    subject = Subject.phone(CALLER)
    rows = await find_subject_rows(api.db, client, subject)
    pieces: list[int] = []
    received = io.BytesIO()

    async def write(chunk: bytes) -> None:
        pieces.append(len(chunk))
        received.write(chunk)

    summary = await write_export(
        api.db,
        client,
        subject,
        rows,
        hasher=api.rights.hasher,
        archive=api.archive,
        write=write,
        now=api.wall.now,
    )
    assert summary.audio_bytes == len(big)
    assert max(pieces) < 256 * 1024  # never the whole file at once
    recording = zipfile.ZipFile(received).read(f"recordings/{rows.recording_ids[0]}.flac")
    assert recording == big
