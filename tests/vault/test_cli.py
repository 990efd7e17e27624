"""``callrouter vault rotate [--rewrap] | rewrap | status``, run as the command line runs it
(in a thread: it runs its own event loop), against a real database for the audit log."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrouter.cli import main
from callrouter.vault import Vault

UNREACHABLE = "postgresql://callrouter@127.0.0.1:1/callrouter"
"""Nothing listens on port 1: connecting is refused at once."""


async def run(
    capsys: pytest.CaptureFixture[str], dsn: str, data_dir: Path, *args: str
) -> tuple[int, str, str]:
    status = await asyncio.to_thread(
        main, ["vault", *args, "--data-dir", str(data_dir), "--database-url", dsn]
    )
    out, err = capsys.readouterr()
    return status, out, err


async def audited(dsn: str) -> list[dict[str, Any]]:
    """The vault's entries in the audit log, oldest first."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT actor, action, client_id, counts::text FROM privacy_audit "
            "WHERE action LIKE 'vault.%' ORDER BY at, id"
        )
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def entry(action: str, counts: str) -> dict[str, Any]:
    return {"actor": "cli", "action": action, "client_id": None, "counts": counts}


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own CALLROUTER_* variables must not steer these runs."""
    for name in [n for n in os.environ if n.startswith("CALLROUTER_")]:
        monkeypatch.delenv(name)


async def test_status_before_any_key_ring_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = await run(capsys, UNREACHABLE, tmp_path / "data", "status")
    ring = tmp_path / "data" / "vault" / "keyring.json"
    assert status == 1
    assert out == ""
    assert err == (
        f"callrouter: error: {ring}: no key ring (it is created when the first recording key "
        "is made, or by `callrouter vault rotate`)\n"
    )
    assert not ring.exists()


async def test_rotate_rewrap_and_status(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, database_dsn: str
) -> None:
    data = tmp_path / "data"
    ring = data / "vault" / "keyring.json"
    status, out, _ = await run(capsys, database_dsn, data, "rotate")
    first = re.fullmatch(rf"vault: created {ring} with (kek-[0-9a-f]{{8}})\n", out)
    assert status == 0 and first is not None

    vault = Vault.open(ring, data / "vault" / "keys")
    for _ in range(3):
        vault.create_key(uuid.uuid4())

    status, out, _ = await run(capsys, database_dsn, data, "rotate", "--rewrap")
    second = re.match(r"vault: (kek-[0-9a-f]{8}) is now the current key-encryption key", out)
    assert status == 0 and second is not None
    assert out.splitlines() == [
        f"vault: {second[1]} is now the current key-encryption key (was {first[1]})",
        f"vault: re-wrapped 3 data keys under {second[1]}",
    ]

    status, out, _ = await run(capsys, database_dsn, data, "status")
    assert status == 0
    assert out.splitlines() == [
        f"key ring: {ring}",
        f"key store: {data / 'vault' / 'keys'} (3 data keys)",
        f"  {first[1]}           0 data keys",
        f"  {second[1]}  current  3 data keys",
    ]

    status, out, _ = await run(capsys, database_dsn, data, "rewrap")
    assert (status, out) == (0, f"vault: re-wrapped 0 data keys under {second[1]}\n")

    # Every change is in the audit log, as the command line's; status changes nothing.
    assert await audited(database_dsn) == [
        entry("vault.key_rotated", '{"data_keys": 0, "key_encryption_keys": 1}'),
        entry("vault.key_rotated", '{"data_keys": 3, "key_encryption_keys": 2}'),
        entry("vault.rewrapped", '{"data_keys": 3}'),
        entry("vault.rewrapped", '{"data_keys": 0}'),
    ]


async def test_no_key_changes_without_a_database_to_audit_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    status, out, err = await run(capsys, UNREACHABLE, data, "rotate")
    assert (status, out) == (1, "")
    assert err.startswith(
        "callrouter: error: no key was changed: the database, where key changes are audited, "
        "cannot be reached: "
    )
    assert not (data / "vault").exists()


async def test_a_readable_key_ring_is_refused_by_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, database_dsn: str
) -> None:
    data = tmp_path / "data"
    await run(capsys, database_dsn, data, "rotate")
    ring = data / "vault" / "keyring.json"
    ring.chmod(0o644)
    status, out, err = await run(capsys, database_dsn, data, "status")
    assert (status, out) == (1, "")
    assert "mode 0644 lets group or others at the key ring" in err


async def test_the_key_paths_come_from_the_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, database_dsn: str
) -> None:
    config = tmp_path / "callrouter.toml"
    config.write_text(
        f'[vault]\nkey_ring = "{tmp_path}/etc/ring.json"\nkeys_dir = "{tmp_path}/keys"\n'
        f'[database]\nurl = "{database_dsn}"\n'
    )
    status = await asyncio.to_thread(
        main, ["vault", "rotate", "--config", str(config), "--data-dir", str(tmp_path)]
    )
    assert status == 0
    assert (tmp_path / "etc" / "ring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").is_dir()
    assert not (tmp_path / "vault").exists()
    capsys.readouterr()
