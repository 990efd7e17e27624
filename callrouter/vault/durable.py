"""Durable file operations the vault relies on: atomic replacement, directory fsync, locks.

A rename is only durable once the directory holding it is fsynced (POSIX leaves it to the file
system; ext4 and XFS lose an unsynced rename on power loss), so every rename here is followed by
one.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "durable_files",
    "fsync_directory",
    "locked",
    "private_directory",
    "temp_name",
    "write_all",
    "write_atomically",
]


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_files(paths: list[Path]) -> None:
    """Make many files just written durable, with their directory entries: one ``syncfs(2)``
    per directory holding them (the first flushes the file system; the rest find little to
    do) instead of a fsync per file, which made copying keys 20 times slower than ``cp``
    (bench/backup.py). Linux only, like the rest of callrouter.

    :raises OSError: the file system reports a write-back error.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for directory in sorted({path.parent for path in paths}):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if libc.syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), str(directory))
        finally:
            os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (``os.write`` may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def temp_name(path: Path) -> Path:
    """A hidden, unique temp file beside ``path``: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole.

    The temp file is created with ``mode`` from the start, so the data is never readable by
    more than it should be, even for a moment.
    """
    temp = temp_name(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, path)
    fsync_directory(path.parent)


def private_directory(path: Path, *, create: bool) -> int | None:
    """Create ``path`` (mode 0700) when asked and missing; return its permission bits.

    :returns: None when the directory does not exist and ``create`` is false.
    """
    if create and not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it first; its mode is checked below like any other
        else:
            fsync_directory(path.parent)
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None


@contextmanager
def locked(lock_file: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``lock_file`` (created 0600), across processes and threads.

    Each call opens its own descriptor, and flock locks belong to the open file description,
    so two threads of one process exclude each other too.
    """
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
