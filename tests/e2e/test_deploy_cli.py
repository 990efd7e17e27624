"""Issue 12: every command finds serve's configuration and data, or says where it looked;
the first operator key is spent only by a start that listens; numbers name real dialplans."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from callrouter.config import find_config
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import free_port


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``callrouter ARGS`` as an operator types it in ``cwd``: no flags added."""
    return subprocess.run(
        [sys.executable, "-m", "callrouter", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
            **(env or {}),
        },
    )


def call_api(
    url: str, key: str, method: str = "GET", data: dict[str, object] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(data).encode()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_find_config_takes_the_flag_then_the_variable_then_the_search_path(
    tmp_path: Path,
) -> None:
    etc, local = tmp_path / "etc.toml", tmp_path / "local.toml"
    search = (etc, local)
    assert find_config(None, {}, search) is None
    local.write_text("")
    assert find_config(None, {}, search) == local
    etc.write_text("")
    assert find_config(None, {}, search) == etc
    named = tmp_path / "named.toml"
    assert find_config(None, {"CALLROUTER_CONFIG": str(named)}, search) == named
    flag = tmp_path / "flag.toml"
    assert find_config(flag, {"CALLROUTER_CONFIG": str(named)}, search) == flag


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "list"],
        ["keys", "create", "--operator"],
        ["dialplan", "explain", "+441615550100"],
        ["purge", "--dry-run"],
        ["migrate"],
        ["privacy", "requests"],
    ],
)
def test_commands_other_than_serve_never_create_a_database(
    workdir: Path, command: list[str]
) -> None:
    done = cli(workdir, *command)
    assert done.returncode == 2, done.stderr
    assert f"no callrouter database in {workdir / 'callrouter-data' / 'postgres'}" in done.stderr
    assert "configuration: none" in done.stderr and "callrouter.toml" in done.stderr
    assert list(workdir.iterdir()) == [], "the command left files behind"


def test_commands_read_the_same_file_serve_reads(workdir: Path) -> None:
    (workdir / "callrouter.toml").write_text('data_dir = "state"\n')
    done = cli(workdir, "keys", "list")
    assert done.returncode == 2
    assert f"no callrouter database in {workdir / 'state' / 'postgres'}" in done.stderr
    assert f"configuration: {workdir / 'callrouter.toml'}" in done.stderr
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    done = cli(elsewhere, "keys", "list", env={"CALLROUTER_CONFIG": str(workdir / "x.toml")})
    assert "x.toml: cannot read" in done.stderr


def test_failed_start_keeps_the_first_key_and_operator_keys_can_be_made(workdir: Path) -> None:
    config = workdir / "etc" / "callrouter.toml"
    config.parent.mkdir()
    empty_plans = workdir / "plans"
    empty_plans.mkdir()
    config.write_text(f'data_dir = "{workdir / "data"}"\ndialplans_dir = "{empty_plans}"\n')
    env = {"CALLROUTER_CONFIG": str(config)}

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        failed = ServeProcess(
            workdir / "data", "--http-port", port, "--sip-port", str(free_port()), env=env
        )
        assert failed.process.wait(120) == 1
        failed.drain()
    assert f"dialplan: WARNING: no dialplan loaded from {empty_plans}" in failed.output
    assert failed.operator_key is None, failed.output

    server = ServeProcess(workdir / "data", "--sip-port", str(free_port()), env=env)
    try:
        server.wait_ready()
        key = server.operator_key
        assert key is not None, server.output
        key_line = next(i for i, line in enumerate(server.lines) if "operator key" in line)
        listening = [i for i, line in enumerate(server.lines) if "listening on" in line]
        assert listening and max(listening) < key_line, server.output

        # Another directory, the same configuration through the variable.
        made = cli(workdir / "plans", "keys", "create", "--operator", "--name", "on call", env=env)
        assert made.returncode == 0, made.stderr
        assert re.search(r"created operator key \S+", made.stdout)
        second = re.search(r"secret \(shown once, store it now\): (\S+)", made.stdout)
        assert second is not None
        url = server.http_url
        status, client = call_api(url + "/v1/clients", second.group(1), "POST", {"name": "Acme"})
        assert status == 201, client

        number = {"client_id": client["id"], "e164": "+441615550100", "dialplan": "nope"}
        status, problem = call_api(url + "/v1/numbers", key, "POST", number)
        assert status == 422, problem
        assert problem["errors"] == [
            {
                "field": "dialplan",
                "reason": "no dialplan 'nope' is in service (known: default); "
                "add nope.toml to the dialplans directory first",
            }
        ]
        del number["dialplan"]
        status, created = call_api(url + "/v1/numbers", key, "POST", number)
        assert status == 201, created
        item = f"{url}/v1/numbers/{created['id']}"
        status, problem = call_api(item, key, "PATCH", {"dialplan": "nope"})
        assert status == 422 and problem["errors"][0]["field"] == "dialplan", problem
        (empty_plans / "nope.toml").write_text(
            (Path(__file__).parents[2] / "dialplans" / "default.toml").read_text()
        )
        server.wait_for(r"dialplan: loaded nope from")
        status, patched = call_api(item, key, "PATCH", {"dialplan": "nope"})
        assert status == 200 and patched["dialplan"] == "nope", patched

        listed = cli(workdir / "plans", "keys", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.count("operator  active") == 2, listed.stdout
    finally:
        assert server.stop() == 0
