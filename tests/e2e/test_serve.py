"""``callrouter serve`` as a newcomer runs it: embedded PostgreSQL, first-start key, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from callrouter.store.database import ensure_database
from callrouter.store.embedded import EmbeddedPostgres
from tests.e2e.serve import ServeProcess


def get_json(url: str, key: str | None = None, data: dict[str, object] | None = None) -> object:
    request = urllib.request.Request(url, method="POST" if data is not None else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(data).encode()
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (e.g. a postgres serving that data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(int(entry.name))
    return found


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrouter", *args, "--data-dir", str(workdir / "data")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
    )


def test_serve_comes_up_answers_health_and_stops_cleanly(workdir: Path) -> None:
    server = ServeProcess(workdir / "data", first_start=True).wait_ready()
    try:
        server.wait_for(r"database: created an embedded PostgreSQL cluster in ")
        pid = int(server.wait_for(r"embedded PostgreSQL .* pid (\d+)").group(1))
        assert server.operator_key is not None
        health = get_json(server.http_url + "/v1/health")
        space = health.pop("recording_space")
        assert health == {"status": "ok", "database": "ok", "version": "0.1.0"}
        assert space["status"] == "ok" and space["free_bytes"] >= space["min_free_bytes"]
        assert space["min_free_bytes"] == 256 * 1024 * 1024
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert "stopped" in server.messages
    assert not Path(f"/proc/{pid}").exists()
    assert processes_using(workdir / "data") == []


def test_restart_keeps_data_and_the_operator_key_is_made_once(workdir: Path) -> None:
    first = ServeProcess(workdir / "data", first_start=True).wait_ready()
    try:
        key = first.operator_key
        assert key is not None
        client = get_json(first.http_url + "/v1/clients", key, {"name": "Acme"})
    finally:
        assert first.stop() == 0

    second = ServeProcess(workdir / "data").wait_ready()
    try:
        assert second.operator_key is None
        assert not any("created an embedded PostgreSQL" in line for line in second.lines)
        listed = get_json(second.http_url + "/v1/clients", key)
        assert listed == {"data": [client], "next_cursor": None}
    finally:
        assert second.stop() == 0


def test_second_serve_on_the_same_data_directory_is_refused(workdir: Path) -> None:
    first = ServeProcess(workdir / "data").wait_ready()
    try:
        second = ServeProcess(workdir / "data")
        code = second.process.wait(60)
        second.drain()
        assert code == 1
        assert re.search(
            r"data directory .* is in use by another callrouter \(pid \d+\)", second.output
        ), second.output
        health = get_json(first.http_url + "/v1/health")
        assert (health["status"], health["database"]) == ("ok", "ok")
    finally:
        assert first.stop() == 0


def test_keys_cli_works_beside_a_running_server(workdir: Path) -> None:
    server = ServeProcess(workdir / "data").wait_ready()
    try:
        key = server.operator_key
        client = get_json(server.http_url + "/v1/clients", key, {"name": "Acme"})
        assert isinstance(client, dict)
        created = run_cli(workdir, "keys", "create", "--client", client["id"], "--name", "ci")
        assert created.returncode == 0, created.stderr
        secret = re.search(r"secret \(shown once, store it now\): (\S+)", created.stdout)
        key_id = re.search(r"created client \S+ key (\S+)", created.stdout)
        assert secret and key_id
        numbers = get_json(server.http_url + "/v1/numbers", secret.group(1))
        assert numbers == {"data": [], "next_cursor": None}

        listed = run_cli(workdir, "keys", "list")
        assert key_id.group(1) in listed.stdout and "active" in listed.stdout
        revoked = run_cli(workdir, "keys", "revoke", key_id.group(1))
        assert revoked.returncode == 0, revoked.stderr
        try:
            get_json(server.http_url + "/v1/numbers", secret.group(1))
            raise AssertionError("a revoked key still works")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        assert server.stop() == 0


def test_bad_configuration_is_refused_naming_the_key(workdir: Path) -> None:
    config = workdir / "bad.toml"  # not ./callrouter.toml, which every command would read
    config.write_text("[http]\nport = 8080\nprot = 1\n")
    result = run_cli(workdir, "serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:3: unknown key 'http.prot'" in result.stderr
    assert not (workdir / "data" / "postgres").exists()

    result = run_cli(workdir, "serve", "--http-port", "eighty")
    assert result.returncode == 2
    assert "command line --http-port: http.port: expected int, got 'eighty'" in result.stderr


def test_migrate_twice_changes_nothing(workdir: Path, postgres: EmbeddedPostgres) -> None:
    # An empty database made by its administrator; migrate never makes one (only serve does).
    name = "migrate_" + uuid.uuid4().hex[:12]
    asyncio.run(ensure_database(postgres.admin_dsn, name))
    url = postgres.admin_dsn.replace("/postgres?", f"/{name}?", 1)
    first = run_cli(workdir, "migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001" in first.stdout
    second = run_cli(workdir, "migrate", "--database-url", url)
    assert second.returncode == 0, second.stderr
    assert "applied migration" not in second.stdout
    assert "schema is up to date" in second.stdout
    assert not (workdir / "data").exists()
