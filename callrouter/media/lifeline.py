"""What ties a media worker to the ``serve`` that started it: its parent and its control socket.

Rules of this file:
- A worker never outlives its parent. The kernel sends it SIGTERM when the parent dies
  (``PR_SET_PDEATHSIG``, prctl(2)); since that signal is tied to the thread that forked and is
  lost if the parent died before it was set, the worker also checks its parent pid, at start and
  once a second, and stops when it has been re-parented.
- A control socket belongs to the worker holding the exclusive ``flock`` on ``<socket>.lock``
  beside it. Only the holder may remove or bind the socket, so a worker that is still stopping
  can never delete the socket of the one that replaces it; the kernel drops the lock when its
  holder dies, however it dies.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import time
from pathlib import Path

__all__ = ["SocketTaken", "claim_socket", "die_with_parent", "orphaned", "socket_lock_path"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_RETRY_EVERY = 0.05


class SocketTaken(Exception):
    """Another live process holds the control socket's lock."""


def die_with_parent(parent: int) -> bool:
    """Ask for SIGTERM when the parent dies; False when ``parent`` is already gone (the
    caller should stop at once: the signal would never come)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    return not orphaned(parent)


def orphaned(parent: int) -> bool:
    """The process that started us is gone (we were re-parented to init or a subreaper)."""
    return os.getppid() != parent


def socket_lock_path(socket: Path) -> Path:
    return socket.with_name(socket.name + ".lock")


def claim_socket(socket: Path, wait: float) -> int:
    """Take the lock of ``socket`` for this process's lifetime and return its descriptor (keep
    it open: closing it gives the socket away).

    A worker that is still stopping (its parent was killed a moment ago) holds it for a second
    or two, so the lock is retried for up to ``wait`` seconds before giving up.

    :raises SocketTaken: another process still holds it after ``wait`` seconds.
    """
    lock = socket_lock_path(socket)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise SocketTaken(
                    f"{socket} is held by another media worker (pid {holder}) "
                    f"for more than {wait:g} s"
                ) from None
            time.sleep(_RETRY_EVERY)  # before the worker's loop runs: nothing else to serve
            continue
        break
    # The holder's pid, for the message another worker gives when it cannot take the lock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
