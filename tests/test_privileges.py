"""Handing the server's files to its account, and dropping root for good (root only: chown and
setuid need it; CI runs as root)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from callrouter.privileges import Account, PrivilegeError, account_for, hand_over

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown and setuid need root")

NOBODY = pwd.getpwnam("nobody")
ACCOUNT = Account("nobody", NOBODY.pw_uid, NOBODY.pw_gid)


def test_hand_over_gives_whole_trees_except_the_skipped_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "vault" / "keys").mkdir(parents=True)
    (data / "vault" / "keys" / "k1").write_text("wrapped")
    (data / "postgres" / "pgdata").mkdir(parents=True)
    (data / "postgres" / "pgdata" / "PG_VERSION").write_text("18")
    (data / "link").symlink_to("/etc/hostname")
    lone = tmp_path / "etc" / "keyring.json"
    lone.parent.mkdir()
    lone.write_text("{}")
    hand_over([data, lone, tmp_path / "missing"], ACCOUNT, skip=[data / "postgres"])
    owned = [data, data / "vault", data / "vault" / "keys", data / "vault" / "keys" / "k1", lone]
    assert {p.stat().st_uid for p in owned} == {ACCOUNT.uid}
    assert (data / "link").lstat().st_uid == ACCOUNT.uid  # the link, not what it points to
    assert Path("/etc/hostname").stat().st_uid == 0
    assert (data / "postgres").stat().st_uid == 0
    assert (data / "postgres" / "pgdata" / "PG_VERSION").stat().st_uid == 0
    assert lone.parent.stat().st_uid == 0  # a lone file's folder may hold the configuration


def test_a_dropped_process_cannot_get_root_back() -> None:
    script = (
        "import os\n"
        "from callrouter.privileges import Account, drop_to\n"
        f"drop_to(Account('nobody', {ACCOUNT.uid}, {ACCOUNT.gid}))\n"
        "print(os.getresuid(), os.getresgid(), os.getgroups())\n"
        "try:\n"
        "    os.setuid(0)\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    uid, gid = ACCOUNT.uid, ACCOUNT.gid
    assert result.stdout.split("\n")[:2] == [
        f"({uid}, {uid}, {uid}) ({gid}, {gid}, {gid}) []",
        "refused",
    ]


def test_the_account_is_never_root() -> None:
    with pytest.raises(PrivilegeError, match="is root"):
        account_for("root")


def test_hand_over_leaves_what_the_account_owns_untouched(tmp_path: Path) -> None:
    """A chown sets the ctime even to the same owner, and the start-up sweep of the recordings
    directory goes by the ctime: handing over at every start must not touch every file."""
    data = tmp_path / "data"
    data.mkdir()
    owned, new = data / "owned.flac", data / "new.flac"
    owned.write_bytes(b"")
    hand_over([data], ACCOUNT)
    before = owned.stat().st_ctime_ns
    # The file system's clock has moved past that ctime (it ticks in jiffies, not ns).
    probe = tmp_path / "probe"
    for _ in range(100_000):
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > before:
            break
    else:
        raise AssertionError("the file system's clock did not move")
    new.write_bytes(b"")
    hand_over([data], ACCOUNT)
    assert owned.stat().st_ctime_ns == before
    assert new.stat().st_uid == ACCOUNT.uid
