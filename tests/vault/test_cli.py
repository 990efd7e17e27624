"""``callrouter vault rotate [--rewrap] | rewrap | status``, run as the command line runs it."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from callrouter.cli import main
from callrouter.vault import Vault


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    status = main(["vault", *args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own CALLROUTER_* variables must not steer these runs."""
    for name in [n for n in os.environ if n.startswith("CALLROUTER_")]:
        monkeypatch.delenv(name)


def test_status_before_any_key_ring_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(capsys, tmp_path / "data", "status")
    ring = tmp_path / "data" / "vault" / "keyring.json"
    assert status == 1
    assert out == ""
    assert err == (
        f"callrouter: error: {ring}: no key ring (it is created when the first recording key "
        "is made, or by `callrouter vault rotate`)\n"
    )
    assert not ring.exists()


def test_rotate_rewrap_and_status(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    ring = data / "vault" / "keyring.json"
    status, out, _ = run(capsys, data, "rotate")
    first = re.fullmatch(rf"vault: created {ring} with (kek-[0-9a-f]{{8}})\n", out)
    assert status == 0 and first is not None

    vault = Vault.open(ring, data / "vault" / "keys")
    for _ in range(3):
        vault.create_key(uuid.uuid4())

    status, out, _ = run(capsys, data, "rotate", "--rewrap")
    second = re.match(r"vault: (kek-[0-9a-f]{8}) is now the current key-encryption key", out)
    assert status == 0 and second is not None
    assert out.splitlines() == [
        f"vault: {second[1]} is now the current key-encryption key (was {first[1]})",
        f"vault: re-wrapped 3 data keys under {second[1]}",
    ]

    status, out, _ = run(capsys, data, "status")
    assert status == 0
    assert out.splitlines() == [
        f"key ring: {ring}",
        f"key store: {data / 'vault' / 'keys'} (3 data keys)",
        f"  {first[1]}           0 data keys",
        f"  {second[1]}  current  3 data keys",
    ]

    status, out, _ = run(capsys, data, "rewrap")
    assert (status, out) == (0, f"vault: re-wrapped 0 data keys under {second[1]}\n")


def test_a_readable_key_ring_is_refused_by_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    run(capsys, data, "rotate")
    ring = data / "vault" / "keyring.json"
    ring.chmod(0o644)
    status, out, err = run(capsys, data, "status")
    assert (status, out) == (1, "")
    assert "mode 0644 lets group or others at the key ring" in err


def test_the_key_paths_come_from_the_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "callrouter.toml"
    config.write_text(
        f'[vault]\nkey_ring = "{tmp_path}/etc/ring.json"\nkeys_dir = "{tmp_path}/keys"\n'
    )
    status = main(["vault", "rotate", "--config", str(config), "--data-dir", str(tmp_path)])
    assert status == 0
    assert (tmp_path / "etc" / "ring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").is_dir()
    assert not (tmp_path / "vault").exists()
    capsys.readouterr()
