"""Memory of ``callrouter serve``'s process tree by role, read from /proc.

A sum of RSS over the tree counts every shared page once per process that maps it: PostgreSQL's
shared buffers are counted again in each backend that touched them, so the sum grows while the
cache warms without any leak. Per process we read ``/proc/PID/smaps_rollup`` instead:

- USS (unique set size): Private_Clean + Private_Dirty of the process's private mappings, the
  memory only this process holds and would give back on exit. A leak shows here. Read from
  ``/proc/PID/smaps`` mapping by mapping, because the kernel also counts as private a page of a
  *shared* mapping that only this process has touched so far: PostgreSQL's checkpointer walks
  the shared buffers and so looked like it grew (4.3 -> 4.8 MiB, all of it in the shared
  segment ``/dev/zero (deleted)``). Those pages are the shared segment's, counted under
  Pss_Shmem and bounded by its size; a mapping is shared when its VmFlags hold ``sh``.
- PSS: each shared page divided among the processes that map it.
- Pss_Shmem: the process's share of shared memory (PostgreSQL's segment: shared buffers, WAL
  buffers, lock tables). Summed over PostgreSQL's processes it is the resident part of the
  cluster's shared memory, which ``shared_buffers`` and the other segment sizes bound.

Roles: ``serve`` (the root), ``media worker`` (each worker process, numbered in pid order),
``pg postmaster``, ``pg backends`` (client connections, summed), and PostgreSQL's auxiliary
processes by their titles (``pg checkpointer``, ``pg io workers``, ...).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_WORKER_MODULE = "callrouter.media.worker"
# PostgreSQL's processes that come and go in numbers (a pool's connections, per-query helpers):
# summed per role, and judged per process, since their count is bounded by configuration.
POOLED = ("io worker", "autovacuum worker", "parallel worker")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POOLED_ROLES = ("pg backends", *(f"pg {name}s" for name in POOLED))
# A client backend's title: "postgres: USER DATABASE [local] STATE" or "... HOST(PORT) STATE".
CLIENT_BACKEND = re.compile(r"\[local\]|\(\d+\)")


@dataclass
class RoleUsage:
    """The processes of one role, summed (memory in KiB)."""

    processes: int = 0
    uss: int = 0
    pss: int = 0
    rss: int = 0
    shmem: int = 0
    """Pss_Shmem: this role's share of shared memory."""
    cpu: float = 0.0
    """User + system CPU seconds the role's live processes have used since they started."""


@dataclass
class TreeSample:
    """One look at the whole tree."""

    roles: dict[str, RoleUsage] = field(default_factory=dict)
    fds: int = 0
    udp: int = 0
    fds_by_role: Counter[str] = field(default_factory=Counter)

    @property
    def postgres_shmem_kib(self) -> int:
        """Resident shared memory of the PostgreSQL cluster (each page counted once)."""
        return sum(m.shmem for role, m in self.roles.items() if role.startswith("pg "))

    def total(self, what: str) -> int:
        return sum(getattr(m, what) for m in self.roles.values())


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    found: list[int] = []
    pending = [root]
    while pending and len(found) < 10_000:
        pid = pending.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                pending += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue  # the thread or process went away while we looked
    return found


def role_of(pid: int, root: int, argv: list[str]) -> str:
    """The role of a process, from its command line (PostgreSQL rewrites argv[0] into a
    title such as ``postgres: checkpointer``)."""
    if pid == root:
        return "serve"
    if MEDIA_WORKER_MODULE in argv:
        return "media worker"
    title = " ".join(argv)
    if not title.startswith("postgres: "):
        if argv and Path(argv[0]).name in ("postgres", "postmaster"):
            return "pg postmaster"
        return "other"
    title = title.removeprefix("postgres: ")
    if CLIENT_BACKEND.search(title):
        return "pg backends"
    for name in POOLED:
        if title.startswith(name):
            return f"pg {name}s"
    return "pg " + title.strip()


def smaps_rollup(text: str) -> dict[str, int]:
    """The kB figures of an ``smaps_rollup`` file by field name."""
    figures: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            figures[name] = int(parts[0])
    return figures


MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def private_of_private_mappings(smaps: str) -> int:
    """KiB of Private_Clean + Private_Dirty in the private mappings of a ``/proc/PID/smaps``."""
    own = 0
    pending = 0
    for line in smaps.splitlines():
        if MAPPING.match(line):
            pending = 0
        elif line.startswith(("Private_Clean:", "Private_Dirty:")):
            pending += int(line.split()[1])
        elif line.startswith("VmFlags:"):  # the last field of each mapping
            if "sh" not in line.split()[1:]:
                own += pending
            pending = 0
    return own


def udp_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            inodes.add(line.split()[9])
    return inodes


def sample_tree(root: int) -> TreeSample:
    """Memory per role, open descriptors and UDP sockets of ``root``'s tree now."""
    found = TreeSample()
    udp_now = udp_inodes()
    workers = 0
    for pid in sorted(process_tree(root)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            figures = smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
            own = private_of_private_mappings(Path(f"/proc/{pid}/smaps").read_text())
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a PostgreSQL backend that ended between listing and reading
        udp = 0
        for fd in fds:
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue  # closed since the listing: a relay's socket at the end of its call
            if target.startswith("socket:[") and target[8:-1] in udp_now:
                udp += 1
        role = role_of(pid, root, argv)
        if role == "media worker":
            workers += 1
            role = f"media worker {workers}"
        memory = found.roles.setdefault(role, RoleUsage())
        memory.processes += 1
        memory.uss += own
        memory.pss += figures.get("Pss", 0)
        memory.rss += figures.get("Rss", 0)
        memory.shmem += figures.get("Pss_Shmem", 0)
        memory.cpu += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS  # utime, stime: proc(5)
        found.fds += len(fds)
        found.fds_by_role[role] += len(fds)
        found.udp += udp
    return found
