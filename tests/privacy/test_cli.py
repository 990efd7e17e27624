"""The CLI: callrouter purge [--dry-run] and callrouter privacy ..., against a real database."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import zipfile
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from tests.privacy.conftest import CALLER, T0, PrivacyApi, add_recording, record_call


async def callrouter(api: PrivacyApi, dsn: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callrouter",
        *args,
        "--database-url",
        dsn,
        "--data-dir",
        str(api.data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_purge_dry_run_shows_what_would_go_and_removes_nothing(
    api: PrivacyApi, database_dsn: str
) -> None:
    client_id, _ = await api.client_with_key("Acme")
    await record_call(api, UUID(client_id), CALLER, at=T0 - timedelta(days=3000))
    code, out, err = await callrouter(api, database_dsn, "purge", "--dry-run")
    assert code == 0, err
    assert f"client {client_id}: 1 calls" in out
    assert "retention: would remove 1 calls, 0 recordings" in out
    assert await api.db.fetchval("SELECT count(*) FROM calls") == 1
    code, out, err = await callrouter(api, database_dsn, "purge")
    assert code == 0, err
    assert "retention: removed 1 calls" in out
    assert await api.db.fetchval("SELECT count(*) FROM calls") == 0
    actor = await api.db.fetchval(
        "SELECT actor FROM privacy_audit WHERE action = 'retention.purge'"
    )
    assert actor == "cli"


async def test_privacy_commands_erase_export_and_list(
    api: PrivacyApi, database_dsn: str, tmp_path: Path
) -> None:
    client_id, _ = await api.client_with_key("Acme")
    client = UUID(client_id)
    call_id = await record_call(api, client, CALLER, at=T0)
    out_file = tmp_path / "export.zip"
    code, out, err = await callrouter(
        api, database_dsn, "privacy", "export", "--client", client_id, "--phone", CALLER,
        "--out", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    assert out_file.stat().st_mode & 0o777 == 0o600
    index = json.loads(zipfile.ZipFile(io.BytesIO(out_file.read_bytes())).read("index.json"))
    assert [i["id"] for i in index["items"] if i["type"] == "call"] == [str(call_id)]

    # The CLI has no recordings service: it refuses an export it could not complete.
    await add_recording(api, client, call_id, b"audio", T0)
    code, _, err = await callrouter(
        api, database_dsn, "privacy", "export", "--client", client_id, "--phone", CALLER,
        "--out", str(tmp_path / "again.zip"),
    )  # fmt: skip
    assert code == 1 and "recordings service" in err
    assert not (tmp_path / "again.zip").exists()

    code, out, err = await callrouter(
        api, database_dsn, "privacy", "erase", "--client", client_id, "--phone", "+44 7700 900123"
    )
    assert code == 0, err
    assert "erasure request" in out and "calls: 1" in out and "recordings: 1" in out
    assert "notice: An erasure keeps no trace of the number" in out
    assert "queued for destruction" in out  # the server's recordings service shreds them
    assert await api.db.fetchval("SELECT count(*) FROM recording_disposals") == 1

    code, out, err = await callrouter(
        api, database_dsn, "privacy", "erase", "--client", client_id, "--phone", "0151"
    )
    assert code == 1 and "not in international format" in err

    code, out, err = await callrouter(api, database_dsn, "privacy", "requests", "--status", "open")
    assert code == 0, err
    assert "access" in out  # the refused export's request stays open
    assert "erasure" not in out
