"""The soak's per-minute series and its verdicts: memory per role, descriptors and sockets.

Memory is judged per role on USS (private memory) with a line fitted over the second half of
the run, so the warm-up (pools filling, PostgreSQL's caches, the allocator's arenas) is left
out. The line is Theil-Sen's (the median of the slopes between every two samples), not least
squares', so that one noisy minute cannot decide: the media worker's USS swings with the
recordings finalised since its last heap trim, and one sample 15 MiB above the rest tilted a
least-squares line by -27 MiB/h where the median slope is -11. A role grows when the line rises
by more than ``tolerance`` % of the role's mean per hour and by more than ``floor`` MiB per
hour. A leak only grows: a falling line is reported (SHRINKS: memory given back) and judged
flat. PostgreSQL's
shared memory is reported apart: it is bounded by the segment PostgreSQL allocates at start
(``shared_buffers`` and the rest), which the caller reads from the server and prints.
Descriptors and UDP sockets keep the earlier rule, the mean of the last five minutes within
``tolerance`` % of minutes 2-6, and like memory fail only when they grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from bench.process_memory import POOLED_ROLES, RoleUsage, TreeSample

MIB = 1024.0


@dataclass(frozen=True)
class Point:
    minute: float
    tree: TreeSample


@dataclass(frozen=True)
class Growth:
    """One role's USS over the second half of the run (per process for a pooled role)."""

    role: str
    mean_mib: float
    slope_mib_per_hour: float
    points: int
    word: str
    """"flat", "GROWS", "SHRINKS" or "too short" (fewer than three samples to fit)."""

    @property
    def percent_per_hour(self) -> float:
        return self.slope_mib_per_hour / self.mean_mib * 100 if self.mean_mib else 0.0


def serve_cpu(before: Point | None, after: Point) -> float:
    """serve's CPU between two samples as a share of one core (its event loop's limit)."""
    if before is None or "serve" not in before.tree.roles or "serve" not in after.tree.roles:
        return 0.0
    seconds = (after.minute - before.minute) * 60
    used = after.tree.roles["serve"].cpu - before.tree.roles["serve"].cpu
    return used / seconds if seconds > 0 else 0.0


def role_order(points: list[Point]) -> list[str]:
    """Every role seen: serve, the media workers, the postmaster, the backends, the rest."""
    seen = {role for p in points for role in p.tree.roles}
    first = ["serve", *sorted(r for r in seen if r.startswith("media worker"))]
    first += ["pg postmaster", "pg backends"]
    return [r for r in first if r in seen] + sorted(seen - set(first))


def short(role: str) -> str:
    """A column heading of at most ten characters."""
    if role.startswith("media worker "):
        return "media " + role.rsplit(" ", 1)[1]
    return role.removeprefix("pg ")[:10]


def fit_per_hour(minutes: list[float], values: list[float]) -> float:
    """Theil-Sen: the median slope over every pair of samples, per hour."""
    x, y = np.asarray(minutes, dtype=float), np.asarray(values, dtype=float)
    first, second = np.triu_indices(len(x), k=1)
    run = x[second] - x[first]
    apart = run != 0
    return float(np.median((y[second] - y[first])[apart] / run[apart])) * 60


def second_half(points: list[Point]) -> list[Point]:
    """The samples taken in the second half of the loaded run."""
    if not points:
        return []
    middle = points[0].minute + (points[-1].minute - points[0].minute) / 2
    return [p for p in points if p.minute >= middle]


def judged(role: str, memory: RoleUsage) -> float:
    """The USS judged for a role, MiB: per process when the processes come and go in numbers
    (a pool that opens one more connection is not a leak; one connection that grows is)."""
    if role in POOLED_ROLES:
        return memory.uss / MIB / max(1, memory.processes)
    return memory.uss / MIB


def growth(role: str, points: list[Point], tolerance: float, floor: float) -> Growth:
    """The role's USS trend over the second half of ``points``.

    :param tolerance: % of the mean per hour a role may rise or fall and still be flat.
    :param floor: MiB per hour below which a change is flat whatever its percentage (the
        sampling noise of a process of a few MiB)."""
    late = [p for p in second_half(points) if role in p.tree.roles]
    values = [judged(role, p.tree.roles[role]) for p in late]
    mean = sum(values) / len(values) if values else 0.0
    if len(late) < 3:
        return Growth(role, mean, 0.0, len(late), "too short")
    slope = fit_per_hour([p.minute for p in late], values)
    word = "flat"
    if abs(slope) > floor and abs(slope) > mean * tolerance / 100:
        word = "GROWS" if slope > 0 else "SHRINKS"
    return Growth(role, mean, slope, len(late), word)


def early_late(values: list[float], tolerance: float) -> tuple[str, float]:
    """'flat' or 'GROWS'/'SHRINKS', and the change of the late window against the early one.

    :param values: one a minute from minute 1 on."""
    if len(values) >= 10:
        early, late = values[1:6], values[-5:]  # minutes 2-6, the last five
    else:
        half = max(1, len(values) // 2)
        early, late = values[:half], values[-half:]
    reference = sum(early) / len(early)
    change = (sum(late) / len(late) - reference) / reference * 100 if reference else 0.0
    if abs(change) <= tolerance:
        return "flat", change
    return ("GROWS" if change > 0 else "SHRINKS"), change


def table(points: list[Point], idle: Point, what: str) -> list[str]:
    """One line a sample: ``what`` ("uss" or "pss") in MiB per role, then the PostgreSQL
    cluster's resident shared memory, its client connections, descriptors and UDP sockets."""
    roles = role_order([*points, idle])
    lines = [
        "minute "
        + "".join(f"{short(r):>11s}" for r in roles)
        + "   pg shmem  pg conns  open fds  UDP sockets"
    ]
    for p in [*points, idle]:
        cells = "".join(
            f"{getattr(p.tree.roles[r], what) / MIB:11.1f}" if r in p.tree.roles else f"{'-':>11s}"
            for r in roles
        )
        backends = p.tree.roles.get("pg backends")
        lines.append(
            f"{p.minute:6.1f} {cells} {p.tree.postgres_shmem_kib / MIB:10.1f}"
            f"  {backends.processes if backends else 0:8d}  {p.tree.fds:8d}  {p.tree.udp:11d}"
            + ("  (idle, after the last call)" if p is idle else "")
        )
    return lines


def report(
    points: list[Point], idle: Point, tolerance: float, floor: float, shmem_bound: str
) -> tuple[list[str], bool]:
    """The series, a line per verdict, and whether everything judged is flat.

    :param points: the samples under load (minute 0, before the first call, left out).
    :param shmem_bound: what bounds PostgreSQL's shared memory, as read from the server."""
    lines = ["", "USS MiB (private memory) by role", *table(points, idle, "uss")]
    lines += ["", "PSS MiB by role", *table(points, idle, "pss")]
    half = second_half(points)
    lines += [
        "",
        f"USS fitted over the second half (minutes {half[0].minute:.0f}-{half[-1].minute:.0f}, "
        f"warm-up excluded, Theil-Sen); flat within {tolerance:g} %/h or {floor:g} MiB/h, and "
        "a fall (memory given back) is no leak:"
        if half
        else "no samples under load",
    ]
    growing: list[Growth] = []
    judged_flat = True
    for role in role_order(points):
        g = growth(role, points, tolerance, floor)
        judged_flat &= g.word != "GROWS"
        if g.word == "GROWS":
            growing.append(g)
        each = " each" if role in POOLED_ROLES else ""
        lines.append(
            f"  {role + each:32s} mean {g.mean_mib:7.1f} MiB  {g.slope_mib_per_hour:+7.2f} MiB/h "
            f"({g.percent_per_hour:+6.1f} %/h over {g.points} samples): {g.word}"
        )
    shmem = [p.tree.postgres_shmem_kib / MIB for p in points]
    if shmem:
        lines.append(
            f"PostgreSQL shared memory resident {shmem[0]:.1f} -> {shmem[-1]:.1f} MiB "
            f"(max {max(shmem):.1f}): pages of its shared segment as backends touch them, "
            f"bounded by {shmem_bound}; not judged as a leak"
        )
    for name, values in (
        ("RSS sum", [p.tree.total("rss") / MIB for p in points]),
        ("PSS sum", [p.tree.total("pss") / MIB for p in points]),
    ):
        if values:
            span = f"{values[0]:.1f} -> {values[-1]:.1f} MiB"
            lines.append(f"{name} {span} (counts shared memory; not judged)")
    cpu = [serve_cpu(a, b) for a, b in pairwise(points)]
    if cpu:
        lines.append(
            f"serve CPU per interval: mean {sum(cpu) / len(cpu):.0%}, max {max(cpu):.0%} of one "
            "core (its event loop's limit)"
        )
    for name, counts in (
        ("open fds", [float(p.tree.fds) for p in points]),
        ("UDP sockets", [float(p.tree.udp) for p in points]),
    ):
        if counts:
            word, change = early_late(counts, tolerance)
            # As with memory, only growth is a leak: fewer relay sockets late in a run is fewer
            # calls up at that moment (the offered load varies with the machine's).
            judged_flat &= word != "GROWS"
            lines.append(
                f"{name:12s} min {min(counts):7.0f} max {max(counts):7.0f}  "
                f"late vs early {change:+6.1f} %: {word}"
            )
    if points:
        first, last = points[0].tree, points[-1].tree
        lines.append(
            f"open fds by role, minute {points[0].minute:.0f} -> {points[-1].minute:.0f}: "
            + ", ".join(
                f"{role} {first.fds_by_role.get(role, 0)} -> {last.fds_by_role.get(role, 0)}"
                for role in role_order(points)
            )
        )
    lines.append(
        "memory: "
        + (
            "no role grows"
            if not growing
            else "GROWS in "
            + ", ".join(
                f"{g.role} ({g.slope_mib_per_hour:+.2f} MiB/h, {g.percent_per_hour:+.1f} %/h)"
                for g in growing
            )
        )
    )
    return lines, judged_flat
