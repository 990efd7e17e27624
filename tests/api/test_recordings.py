"""/v1/recordings over a real vault: list, download with ranges, peaks, delete = shred."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import soundfile

from callrouter.vault import NoDataKey
from tests.api.conftest import Api
from tests.api.recorded import recorded_call


async def tenant(api: Api, name: str, e164: str) -> tuple[str, str, dict[str, str]]:
    client_id, key = await api.client_with_key(name)
    number = await api.ok("POST", "/v1/numbers", json={"client_id": client_id, "e164": e164})
    return client_id, key, number


async def test_a_recording_is_listed_downloaded_in_ranges_and_shredded(
    api: Api, tmp_path: Path
) -> None:
    client_id, key, number = await tenant(api, "Acme", "+441515550001")
    recording, flac = await recorded_call(api, client_id, number)

    page = await api.ok("GET", f"/v1/recordings?call_id={recording.call_id}", key)
    assert [r["id"] for r in page["data"]] == [str(recording.id)]
    assert page["data"][0]["bytes"] == len(flac) and page["data"][0]["format"] == "flac"
    by_number = await api.ok("GET", f"/v1/recordings?number_id={number['id']}", key)
    assert len(by_number["data"]) == 1

    async with api.http.get(
        f"/v1/recordings/{recording.id}/audio", headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status == 200 and response.content_type == "audio/flac"
        assert response.headers["Accept-Ranges"] == "bytes"
        whole = await response.read()
    assert whole == flac
    audio, _ = soundfile.read(io.BytesIO(whole), dtype="int16")
    assert audio.shape == (16000, 2)
    half = len(flac) // 2

    async with api.http.get(
        f"/v1/recordings/{recording.id}/audio",
        headers={"Authorization": f"Bearer {key}", "Range": f"bytes={half}-"},
    ) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {half}-{len(flac) - 1}/{len(flac)}"
        assert await response.read() == flac[half:]
    beyond = await api.call(
        "GET", f"/v1/recordings/{recording.id}/audio", key, headers={"Range": "bytes=99999999-"}
    )
    assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{len(flac)}"
    assert (await api.ok("GET", f"/v1/recordings/{recording.id}/peaks", key)) == {"channels": []}

    stored = api.recordings.file(recording.path)
    copy = tmp_path / "backup.flac"
    shutil.copy(stored, copy)
    reply = await api.call("DELETE", f"/v1/recordings/{recording.id}", key)
    assert reply.status == 204
    assert not stored.exists()
    assert (await api.call("GET", f"/v1/recordings/{recording.id}", key)).status == 404
    with pytest.raises(NoDataKey):
        api.recordings.vault.reader(recording.id, copy)
    assert await api.db.fetchval("SELECT count(*) FROM recording_disposals") == 0


async def test_a_durable_recording_is_announced_to_the_clients_webhooks(api: Api) -> None:
    client_id, key, number = await tenant(api, "Acme", "+441515550001")
    await api.ok(
        "POST",
        "/v1/webhooks",
        key,
        {"url": "https://hooks.example/in", "events": ["recording.ready"]},
    )
    recording, flac = await recorded_call(api, client_id, number)
    (queued,) = await api.db.fetch("SELECT event, payload FROM webhook_deliveries")
    assert queued["event"] == "recording.ready"
    data = queued["payload"]["data"]
    assert (data["id"], data["call_id"], data["bytes"]) == (
        str(recording.id),
        str(recording.call_id),
        len(flac),
    )
    assert "caller_number" not in data  # the recording's facts, nobody's number


async def test_deleting_a_client_shreds_its_recordings(api: Api, tmp_path: Path) -> None:
    """However a row goes (erasure, client deletion), the key and file follow it."""
    client_id, _, number = await tenant(api, "Acme", "+441515550001")
    recording, _ = await recorded_call(api, client_id, number)
    copy = tmp_path / "backup.flac"
    shutil.copy(api.recordings.file(recording.path), copy)
    await api.ok("DELETE", f"/v1/clients/{client_id}")
    assert await api.recordings.dispose_pending() == 1
    assert not api.recordings.file(recording.path).exists()
    with pytest.raises(NoDataKey):
        api.recordings.vault.reader(recording.id, copy)


async def test_another_clients_recording_is_not_found(api: Api) -> None:
    a_id, _, a_number = await tenant(api, "A", "+441515550001")
    _, b_key, _ = await tenant(api, "B", "+441515550002")
    recording, _ = await recorded_call(api, a_id, a_number)
    for path in ("", "/audio", "/peaks"):
        reply = await api.call("GET", f"/v1/recordings/{recording.id}{path}", b_key)
        assert reply.status == 404, path
    assert (await api.call("DELETE", f"/v1/recordings/{recording.id}", b_key)).status == 404
    assert (await api.ok("GET", "/v1/recordings", b_key))["data"] == []
