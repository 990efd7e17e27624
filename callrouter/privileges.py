"""Started as root, callrouter keeps root only to open its ports: every process then runs as one
unprivileged system user (``user``, default ``callrouter``, created if missing), which owns the
data, recordings and key directories.

Root is needed for ports below 1024 and to create the account; nothing after start-up needs it,
and a server that parses hostile SIP and audio must not hold it.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Account",
    "PrivilegeError",
    "account_for",
    "drop_to",
    "hand_over",
    "unreachable_install",
]


class PrivilegeError(Exception):
    """The account cannot be created, or the switch to it did not take."""


@dataclass(frozen=True)
class Account:
    """The operating-system account the server's processes run as."""

    name: str
    uid: int
    gid: int


def account_for(name: str) -> Account | None:
    """The account to run as when this process is root (created when missing); None when not
    root (there is nothing to drop)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=False,
            capture_output=True,
            text=True,
        )
        if created.returncode != 0:
            raise PrivilegeError(
                f"cannot create system user {name!r}: {created.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise PrivilegeError(f"user {name!r} is root; name an unprivileged account")
    return Account(name, entry.pw_uid, entry.pw_gid)


def hand_over(paths: Iterable[Path], account: Account, *, skip: Iterable[Path] = ()) -> None:
    """Give ``paths`` (files, or directories with everything under them) to ``account``,
    except the trees in ``skip``; paths that do not exist yet are left alone."""
    skipped = {p.resolve() for p in skip}
    for path in paths:
        if not path.exists() or path.resolve() in skipped:
            continue
        _give(path, account)
        if not path.is_dir() or path.is_symlink():
            continue
        for folder, dirs, files in os.walk(path):
            here = Path(folder)
            dirs[:] = [d for d in dirs if (here / d).resolve() not in skipped]
            for name in [*dirs, *files]:
                _give(here / name, account)


def _give(path: Path, account: Account) -> None:
    """Only what is not the account's already: a ``chown`` sets the ctime even when it changes
    nothing, and the start-up sweep of the recordings directory goes by it (a chown of every
    file at every start would make each sweep check every file again)."""
    status = path.lstat()
    if (status.st_uid, status.st_gid) != (account.uid, account.gid):
        os.chown(path, account.uid, account.gid, follow_symlinks=False)


def drop_to(account: Account) -> None:
    """Switch this process (every thread: glibc applies set*id process-wide) to ``account``
    for good: supplementary groups cleared, group, then user; checked by trying to get root
    back."""
    os.setgroups([])
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError("root could be regained after dropping privileges")


def unreachable_install(account: Account) -> Path | None:
    """The first directory that keeps ``account`` from this Python and callrouter's code (say
    /root, mode 0700, above a pyenv or virtualenv), or None when it can read them all.

    A process that has switched users still imports modules lazily; from an install it cannot
    read those imports fail at the worst time, so the switch is not made at all.
    """
    paths = sysconfig.get_paths()
    needed = [
        Path(sys.executable).resolve(),
        Path(paths["stdlib"]),
        Path(paths["platstdlib"]),
        Path(paths["purelib"]),
        Path(paths["platlib"]),
        Path(__file__).resolve().parent,
    ]
    for path in needed:
        for parent in [*reversed(path.parents), path]:
            try:
                info = parent.stat()
            except OSError:
                break  # a path this Python does not use
            if info.st_uid == account.uid:
                continue
            others = 0o001 if info.st_gid != account.gid else 0o011
            if not info.st_mode & others:
                return parent
    return None
