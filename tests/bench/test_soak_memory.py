"""The soak's memory verdict: roles told apart, private memory read from /proc, growth judged
on the second half of the run only."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.process_memory import RoleUsage, TreeSample, role_of, sample_tree, smaps_rollup
from bench.soak_series import MIB, Point, growth, report, serve_cpu

SERVE = 1000


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["python3", "-m", "callrouter", "serve"], "serve"),
        (["/usr/bin/python3", "-m", "callrouter.media.worker", "--control", "x"], "media worker"),
        (["/opt/pg/bin/postgres", "-D", "/data/pgdata", "-p", "5432"], "pg postmaster"),
        (["postgres: postgres callrouter [local] idle"], "pg backends"),
        (["postgres: app callrouter 10.0.0.5(51234) idle in transaction"], "pg backends"),
        (["postgres: checkpointer "], "pg checkpointer"),
        (["postgres: io worker 2"], "pg io workers"),
        (["postgres: autovacuum worker callrouter"], "pg autovacuum workers"),
        (["postgres: background writer "], "pg background writer"),
        (["sipp", "127.0.0.1:5060"], "other"),
    ],
)
def test_roles_come_from_the_command_line_and_postgres_titles(argv: list[str], role: str) -> None:
    pid = SERVE if role == "serve" else SERVE + 1
    assert role_of(pid, SERVE, argv) == role


@contextmanager
def child_holding(code: str) -> Iterator[int]:
    """A Python child that runs ``code``, then waits until we are done reading it: its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys; {code}; print(1, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"1"
        yield child.pid
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(30)
        child.stdout.close()


def test_private_memory_of_a_child_is_read_from_smaps_rollup() -> None:
    """A child that writes 64 MiB of its own shows at least that much USS, under its role."""
    with child_holding("b = bytearray(64 << 20)") as pid:
        tree = sample_tree(pid)
        assert tree.roles["serve"].processes == 1  # the root of the tree is serve's role
        assert tree.roles["serve"].uss >= 64 * 1024
        assert tree.roles["serve"].pss >= tree.roles["serve"].uss
        assert tree.fds >= 3


def test_pages_of_a_shared_mapping_are_not_private_memory() -> None:
    """A child that writes 64 MiB into a shared mapping only it has mapped (PostgreSQL's
    segment as its checkpointer sees it): the kernel calls those pages private, USS does not."""
    with child_holding(
        "import mmap; m = mmap.mmap(-1, 64 << 20); m.write(b'x' * (64 << 20))"
    ) as pid:
        rollup = smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
        assert rollup["Private_Dirty"] >= 64 * 1024  # what the rollup alone would count
        assert sample_tree(pid).roles["serve"].uss < 48 * 1024


def test_smaps_rollup_fields_in_kib() -> None:
    text = "55f0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  1712 kB\nPrivate_Dirty:  116 kB\n"
    assert smaps_rollup(text) == {"Rss": 1712, "Private_Dirty": 116}


def series(uss_mib: list[float], role: str = "media worker 1", processes: int = 1) -> list[Point]:
    return [
        Point(
            float(minute),
            TreeSample(roles={role: RoleUsage(processes, uss=int(value * MIB))}),
        )
        for minute, value in enumerate(uss_mib, start=1)
    ]


def test_warm_up_in_the_first_half_is_not_growth() -> None:
    """Up 20 MiB over the first 15 minutes (caches, arenas), flat to the end: flat."""
    ramp = [30 + 20 * m / 15 for m in range(15)] + [50.0] * 15
    verdict = growth("media worker 1", series(ramp), tolerance=10, floor=1)
    assert verdict.word == "flat"
    assert abs(verdict.slope_mib_per_hour) < 0.01


def test_steady_rise_in_the_second_half_is_growth_per_hour() -> None:
    """Up 0.1 MiB a minute all along: GROWS by 6 MiB an hour."""
    rising = [100 + 0.1 * m for m in range(30)]
    verdict = growth("serve", series(rising, role="serve"), tolerance=1, floor=1)
    assert verdict.word == "GROWS"
    assert verdict.slope_mib_per_hour == pytest.approx(6.0, abs=0.01)
    # The same rise is within a 10 %/h tolerance of a 100 MiB process.
    assert growth("serve", series(rising, role="serve"), tolerance=10, floor=1).word == "flat"


def test_one_noisy_minute_does_not_decide_the_trend() -> None:
    """The media worker's series of the 50 calls/s soak (minutes 16-30): level around 42 MiB
    with one sample at 59.9 taken before a heap trim. A least-squares line read it as -27 MiB/h;
    the median of the pairwise slopes is -11, and a fall is no leak."""
    late = [
        48.5,
        43.2,
        59.9,
        41.0,
        41.4,
        43.8,
        42.2,
        42.8,
        43.6,
        42.8,
        42.2,
        43.5,
        41.2,
        44.9,
        40.7,
    ]
    points = series([42.0] * 15 + late)
    verdict = growth("media worker 1", points, tolerance=10, floor=1)
    assert verdict.slope_mib_per_hour == pytest.approx(-10.9, abs=0.1)
    assert verdict.word == "SHRINKS"
    lines, flat_everywhere = report(points[:-1], points[-1], 10, 1, "a bound")
    assert flat_everywhere
    assert lines[-1] == "memory: no role grows"


def test_a_rise_hidden_by_one_low_minute_is_still_growth() -> None:
    """Up 0.5 MiB a minute with one sample far below: the median slope still sees the rise."""
    rising = [40 + 0.5 * m for m in range(30)]
    rising[20] = 10.0
    verdict = growth("media worker 1", series(rising), tolerance=10, floor=1)
    assert verdict.word == "GROWS"
    assert verdict.slope_mib_per_hour == pytest.approx(30.0, abs=0.01)


def test_a_pool_that_opens_connections_is_judged_per_connection() -> None:
    """Backends double in number (each the same size): the sum doubles, each one is flat."""
    points = [
        Point(float(m), TreeSample(roles={"pg backends": RoleUsage(n, uss=n * 5 * 1024)}))
        for m, n in enumerate([4] * 15 + [4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8], start=1)
    ]
    assert growth("pg backends", points, tolerance=10, floor=1).word == "flat"


def test_report_names_the_role_that_grows() -> None:
    flat = [40.0] * 30
    rising = [60 + 0.2 * m for m in range(30)]
    points = [
        Point(a.minute, TreeSample(roles={**a.tree.roles, **b.tree.roles}, fds=100, udp=10))
        for a, b in zip(series(flat), series(rising, role="serve"), strict=True)
    ]
    lines, flat_everywhere = report(points[:-1], points[-1], 10, 1, "a bound")
    assert not flat_everywhere
    assert lines[-1] == "memory: GROWS in serve (+12.00 MiB/h, +18.7 %/h)"
    assert any(line.strip().startswith("media worker 1") and "flat" in line for line in lines)


def test_sampling_sees_processes_that_start_later() -> None:
    """The tree is listed afresh each sample: a child started after the first one is found."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; sys.stdin.readline(); "
         "c = subprocess.Popen(['sleep', '30']); print(c.pid, flush=True); sys.stdin.read(); "
         "c.kill()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert sum(m.processes for m in sample_tree(parent.pid).roles.values()) == 1
        parent.stdin.write("go\n")
        parent.stdin.flush()
        int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while sample_tree(parent.pid).roles.get("other") is None:
            assert time.monotonic() < deadline, "the child never showed in the tree"
            time.sleep(0.05)
        assert sample_tree(parent.pid).roles["other"].processes == 1
    finally:
        parent.stdin.close()
        parent.wait(30)
        parent.stdout.close()


def test_serve_cpu_is_a_share_of_one_core_between_samples() -> None:
    before = Point(1.0, TreeSample(roles={"serve": RoleUsage(1, cpu=10.0)}))
    after = Point(2.0, TreeSample(roles={"serve": RoleUsage(1, cpu=40.0)}))
    assert serve_cpu(before, after) == pytest.approx(0.5)
    assert serve_cpu(None, after) == 0.0


@pytest.mark.parametrize(("late_udp", "flat"), [(220, True), (400, False)])
def test_sockets_fail_the_verdict_only_when_they_grow(late_udp: int, flat: bool) -> None:
    """UDP sockets 300 early, then fewer (fewer calls up) or more (relays kept) late."""
    points = [
        Point(
            float(m),
            TreeSample(
                roles={"serve": RoleUsage(1, uss=100 * 1024)},
                fds=1000,
                udp=300 if m <= 15 else late_udp,
            ),
        )
        for m in range(1, 31)
    ]
    lines, flat_everywhere = report(points[:-1], points[-1], 10, 1, "a bound")
    assert flat_everywhere is flat
    word = "SHRINKS" if flat else "GROWS"
    assert any(line.startswith("UDP sockets") and line.endswith(word) for line in lines)
