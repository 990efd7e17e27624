"""``callrouter backup`` / ``restore``: a round trip into a fresh data directory, and erasure
reaching the backup (a recording shredded after it was taken stays unreadable)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from callrouter.call_events import CallAnswered, CallEnded, CallStarted
from callrouter.config import load_config
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import create_pool, ensure_database
from callrouter.store.embedded import EmbeddedPostgres
from callrouter.store.ids import new_id
from callrouter.vault import NoDataKey, Vault
from tests.e2e.serve import ServeProcess, seed_cluster
from tests.e2e.sipp import free_port
from tests.e2e.test_deploy_cli import call_api, cli

DIALPLANS = Path(__file__).parents[2] / "dialplans"
AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def write_config(path: Path, data: str, **extra: str) -> dict[str, str]:
    """A configuration file with absolute paths; the env that makes every command find it."""
    lines = [
        f'data_dir = "{path.parent / data}"',
        f'recordings_dir = "{path.parent / (data + "-recordings")}"',
        f'dialplans_dir = "{DIALPLANS}"',
    ]
    sections: dict[str, list[str]] = {}
    for dotted, value in extra.items():
        table, key = dotted.split("__")
        sections.setdefault(table, []).append(f'{key} = "{value}"')
    for table, entries in sections.items():
        lines += [f"[{table}]", *entries]
    path.write_text("\n".join(lines) + "\n")
    return {"CALLROUTER_CONFIG": str(path)}


def seal(vault: Vault, recording_id: UUID, path: Path, pcm: bytes) -> None:
    with vault.writer(recording_id, path) as out:
        out.write(pcm)


async def add_recorded_calls(config_file: Path, client: UUID, audio: list[bytes]) -> list[UUID]:
    """Calls with encrypted recordings, written as the journal and media worker leave them."""
    config = load_config(config_file)
    dsn = EmbeddedPostgres.running_dsn(config.data_dir / "postgres")
    assert dsn is not None
    vault = Vault.from_config(config, create=False)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    recordings = []
    try:
        for n, pcm in enumerate(audio):
            call_id, recording_id = new_id(), new_id()
            async with CallJournal(pool) as journal:
                journal.record(
                    CallStarted(
                        call_id=call_id,
                        client_id=client,
                        number_id=None,
                        tracking_number="+441615550100",
                        caller_number=f"+4477009001{n:02d}",
                        sip_call_id=f"{call_id}@carrier",
                        trunk=None,
                        dialplan="default",
                        session_id=None,
                        attribution={},
                        record=True,
                        at=AT,
                    )
                )
                journal.record(CallAnswered(call_id, AT + timedelta(seconds=2)))
                journal.record(CallEnded(call_id, "answered", "caller", "BYE", AT))
                await journal.flushed()
            path = f"{recording_id}.flac"
            await asyncio.to_thread(vault.create_key, recording_id)

            await asyncio.to_thread(seal, vault, recording_id, config.recordings_dir / path, pcm)
            await pool.execute(
                """INSERT INTO recordings (id, client_id, call_id, format, path, bytes,
                       duration_seconds, peaks, started_at, ended_at)
                   VALUES ($1, $2, $3, 'flac', $4, $5, 60.0, '[]', $6, $6)""",
                recording_id,
                client,
                call_id,
                path,
                len(pcm),
                AT,
            )
            recordings.append(recording_id)
    finally:
        await pool.close()
    return recordings


def wait_until_gone(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.05)


def download(url: str, key: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def listed(url: str, key: str, what: str) -> list[dict[str, Any]]:
    status, page = call_api(f"{url}/v1/{what}?limit=100", key)
    assert status == 200, page
    data: list[dict[str, Any]] = page["data"]
    return data


def test_backup_and_restore_round_trip_and_erasure_reaches_the_backup(workdir: Path) -> None:
    live_env = write_config(workdir / "live.toml", "live")
    live = load_config(workdir / "live.toml")
    seed_cluster(live.data_dir)  # the configuration names no database elsewhere: no initdb
    server = ServeProcess(live.data_dir, "--sip-port", str(free_port()), env=live_env)
    try:
        server.wait_ready()
        key = server.operator_key
        assert key is not None
        url = server.http_url
        status, client = call_api(url + "/v1/clients", key, "POST", {"name": "Acme"})
        assert status == 201, client
        for e164 in ("+441615550100", "+441615550101"):
            number = {"client_id": client["id"], "e164": e164}
            assert call_api(url + "/v1/numbers", key, "POST", number)[0] == 201
        audio = [secrets.token_bytes(40_000), secrets.token_bytes(30_000)]
        kept, erased = asyncio.run(
            add_recorded_calls(workdir / "live.toml", UUID(client["id"]), audio)
        )

        backup, keys = workdir / "backup", workdir / "offsite-keys"
        done = cli(workdir, "backup", str(backup), "--keys-dir", str(keys), env=live_env)
        assert done.returncode == 0, done.stderr
        for progress in (
            "backup: dumping the database",
            "backup: recordings 2 files",
            "backup: 2 data keys",
            "backup: done",
        ):
            assert progress in done.stdout, done.stdout
        assert {p.name for p in backup.iterdir()} == {
            "manifest.json",
            "database.dump",
            "recordings",
        }
        assert not list(backup.rglob("*.key")) and not list(backup.rglob("keyring*"))
        assert sorted(p.name for p in (keys / "keys").iterdir()) == sorted(
            f"{r}.key" for r in (kept, erased)
        )
        assert not list(keys.rglob("*.flac"))
        assert json.loads((keys / "manifest.json").read_text())["part"] == "keys"

        # After the backup, the caller of the second call asks for the recording to go.
        status, _ = call_api(f"{url}/v1/recordings/{erased}", key, "DELETE")
        assert status == 204
        _, live_keys = live.data_dir / "vault" / "keyring.json", live.data_dir / "vault" / "keys"
        wait_until_gone(live_keys / f"{erased}.key")
        # Then that caller asks for everything to go, and the first caller objects: neither
        # is in the backup, both are in the rights ledger beside the privacy secret.
        for kind, phone in (("erasure", "+447700900101"), ("objection", "+447700900100")):
            request = {"client_id": client["id"], "kind": kind, "subject": {"phone": phone}}
            status, done_request = call_api(url + "/v1/privacy/requests", key, "POST", request)
            assert status == 201 and done_request["status"] == "done", done_request
        assert len(listed(url, key, "calls")) == 1
    finally:
        assert server.stop() == 0

    # Disaster: the data is lost; the key store (kept elsewhere) is not.
    restored_env = write_config(
        workdir / "restored.toml",
        "restored",
        vault__key_ring=str(live.data_dir / "vault" / "keyring.json"),
        vault__keys_dir=str(live_keys),
        privacy__secret_file=str(live.data_dir / "privacy" / "secret"),
    )
    restored = load_config(workdir / "restored.toml")
    mistyped = {**restored_env, "CALLROUTER_VAULT_KEYS_DIR": str(workdir / "no-keys")}
    refused = cli(workdir, "restore", str(backup), env=mistyped)
    assert refused.returncode == 1
    assert "holds none of the keys of the 2 recordings" in refused.stderr
    assert not restored.data_dir.exists()
    done = cli(workdir, "restore", str(backup), env=restored_env)
    assert done.returncode == 0, done.stderr
    assert "1 recording(s) were crypto-shredded after this backup was taken" in done.stdout
    assert "restore: 1 recording(s) restored with their keys" in done.stdout
    assert (
        "restore: rights ledger: 1 erasure(s) and 1 objection(s) made after this backup was "
        "taken carried out again" in done.stdout
    ), done.stdout
    again = cli(workdir, "restore", str(backup), env=restored_env)
    assert again.returncode == 1 and "already holds a database" in again.stderr

    server = ServeProcess(restored.data_dir, "--sip-port", str(free_port()), env=restored_env)
    try:
        server.wait_ready()
        assert server.operator_key is None, "the restored server has its keys already"
        url = server.http_url
        assert [c["name"] for c in listed(url, key, "clients")] == ["Acme"]
        assert sorted(n["e164"] for n in listed(url, key, "numbers")) == [
            "+441615550100",
            "+441615550101",
        ]
        # The erased caller's call stays gone; the objection is back on the list.
        assert [c["caller_number"] for c in listed(url, key, "calls")] == ["+447700900100"]
        assert [s["reason"] for s in listed(url, key, "suppressions")] == ["objection"]
        assert [r["id"] for r in listed(url, key, "recordings")] == [str(kept)]
        assert download(f"{url}/v1/recordings/{kept}/audio", key) == audio[0]
        assert call_api(f"{url}/v1/recordings/{erased}", key)[0] == 404
        wait_until_gone(restored.recordings_dir / f"{erased}.flac")
    finally:
        assert server.stop() == 0

    # The backup's own copy of the erased audio: noise to the live key store.
    current = Vault.from_config(restored, create=False)
    with pytest.raises(NoDataKey):
        current.reader(erased, backup / "recordings" / f"{erased}.flac")

    # The key store lost too: the keys backup opens what the backup holds.
    both_env = write_config(workdir / "both.toml", "both")
    done = cli(workdir, "restore", str(backup), "--keys-dir", str(keys), env=both_env)
    assert done.returncode == 0, done.stderr
    assert "restore: 2 recording(s) restored with their keys" in done.stdout
    both = load_config(workdir / "both.toml")
    with Vault.from_config(both, create=False).reader(
        kept, both.recordings_dir / f"{kept}.flac"
    ) as reader:
        assert reader.read_range(0, len(audio[0])) == audio[0]


def test_backup_and_restore_refuse_what_would_lose_or_mix_data_and_a_database_away(
    workdir: Path,
) -> None:
    nested = cli(workdir, "backup", str(workdir / "b"), "--keys-dir", str(workdir / "b" / "k"))
    assert nested.returncode == 1
    assert "must not be inside" in nested.stderr
    (workdir / "half").mkdir()
    half = cli(workdir, "restore", str(workdir / "half"))
    assert half.returncode == 1
    assert "not a finished callrouter backup" in half.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["half"]
    away = "postgresql:///callrouter?host=/nonexistent&user=postgres"
    failed = cli(
        workdir,
        "backup",
        str(workdir / "b"),
        "--keys-dir",
        str(workdir / "k"),
        "--database-url",
        away,
    )
    assert failed.returncode == 1
    assert "pg_dump failed" in failed.stderr and "/nonexistent" in failed.stderr
    assert not (workdir / "b" / "manifest.json").exists()
    assert not (workdir / "k").exists()


def test_backup_and_restore_with_a_database_url(workdir: Path, postgres: EmbeddedPostgres) -> None:
    """The container's way: PostgreSQL elsewhere (here the tests' server), files on volumes."""
    source, target = (f"backup_{secrets.token_hex(6)}" for _ in range(2))
    asyncio.run(ensure_database(postgres.admin_dsn, source))
    asyncio.run(ensure_database(postgres.admin_dsn, target))
    url = postgres.admin_dsn.replace("/postgres?", "/{}?", 1)
    live_env = {
        **write_config(workdir / "live.toml", "live"),
        "CALLROUTER_DATABASE_URL": url.format(source),
    }
    assert cli(workdir, "migrate", env=live_env).returncode == 0
    Vault.from_config(load_config(workdir / "live.toml"))  # serve makes the ring at first start
    made = cli(workdir, "keys", "create", "--operator", "--name", "kept", env=live_env)
    assert made.returncode == 0, made.stderr

    done = cli(
        workdir, "backup", str(workdir / "b"), "--keys-dir", str(workdir / "k"), env=live_env
    )
    assert done.returncode == 0, done.stderr
    restored_env = {
        **write_config(workdir / "restored.toml", "restored"),
        "CALLROUTER_DATABASE_URL": url.format(target),
    }
    done = cli(
        workdir, "restore", str(workdir / "b"), "--keys-dir", str(workdir / "k"), env=restored_env
    )
    assert done.returncode == 0, done.stderr
    listed = cli(workdir, "keys", "list", env=restored_env)
    assert "operator  active  kept" in listed.stdout, listed.stdout + listed.stderr
    again = cli(workdir, "restore", str(workdir / "b"), env=restored_env)
    assert again.returncode == 1 and "the target database is not empty" in again.stderr
