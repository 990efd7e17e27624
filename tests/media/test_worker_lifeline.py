"""A media worker's ties to its server: it dies with it and owns its control socket.

Real processes and real signals: a parent process is SIGKILLed and its worker must follow; a
second worker on a live worker's socket must neither take nor delete it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from callrouter.media.control import MediaWorkerProcess
from tests.e2e.sipp import free_port

WAIT = 20.0


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its (dead) parent's reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def holds_open(pid: int | None, name: str) -> bool:
    if pid is None:
        return False
    try:
        return any(os.readlink(fd).endswith("/" + name) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False


def worker_arguments(control: Path, rtp: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "callrouter.media.worker",
        "--control",
        str(control),
        "--ports",
        f"{rtp}-{rtp + 9}",
    ]


# A stand-in for ``callrouter serve``: starts a worker tied to itself, prints its pid, waits.
PARENT = """
import subprocess, sys, os
worker = subprocess.Popen(sys.argv[1:] + ["--parent-pid", str(os.getpid())],
                          stdout=subprocess.PIPE, text=True)
assert worker.stdout.readline().strip() == "ready"
print(worker.pid, flush=True)
sys.stdin.read()
"""


def test_a_worker_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    control = tmp_path / "media.sock"
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, *worker_arguments(control, free_port() & ~1)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            worker_pid = int(parent.stdout.readline())
            assert alive(worker_pid)
            parent.kill()
            parent.wait()
            assert wait_gone(worker_pid), f"worker {worker_pid} outlived its parent"
            # It stopped in order: its own socket removed, nothing left listening.
            assert not control.exists()
        finally:
            parent.kill()


def test_a_worker_whose_parent_is_already_gone_does_not_start(tmp_path: Path) -> None:
    # pid 1 is never our test's own process: the worker sees it is not its parent.
    result = subprocess.run(
        [*worker_arguments(tmp_path / "media.sock", 42000), "--parent-pid", "1"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == ""
    assert "already gone" in result.stderr
    assert not (tmp_path / "media.sock").exists()


async def test_a_second_worker_neither_takes_nor_deletes_a_live_workers_socket(
    tmp_path: Path,
) -> None:
    control = tmp_path / "media.sock"
    first = MediaWorkerProcess(control, "127.0.0.1", "42100-42119")
    await first.start()
    try:
        assert first.pid is not None
        second = await asyncio.create_subprocess_exec(
            *worker_arguments(control, 42200),
            "--lock-wait",
            "0.3",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(second.communicate(), WAIT)
        assert second.returncode == 1 and out == b""
        assert f"held by another media worker (pid {first.pid})" in err.decode()
        # The first worker's socket is still there and still answers.
        assert control.exists()
        assert (await first.command("ping"))["sessions"] == 0
    finally:
        await first.stop()
    assert not control.exists()


async def test_a_replacement_worker_waits_for_the_stopping_one_and_works_first_time(
    tmp_path: Path,
) -> None:
    control = tmp_path / "media.sock"
    first = MediaWorkerProcess(control, "127.0.0.1", "42300-42319")
    await first.start()
    assert first.pid is not None
    # The old worker is stopped (as by its parent's death) while the new one starts.
    os.kill(first.pid, signal.SIGSTOP)
    second = MediaWorkerProcess(control, "127.0.0.1", "42300-42319")
    starting = asyncio.create_task(second.start())
    deadline = time.monotonic() + WAIT
    while not holds_open(second.pid, control.name + ".lock"):
        assert time.monotonic() < deadline and not starting.done()
        await asyncio.sleep(0.05)
    # The new worker is waiting for the lock the stopped one holds.
    os.kill(first.pid, signal.SIGCONT)
    await first.stop()
    try:
        await asyncio.wait_for(starting, WAIT)
        # Its socket survived the old worker's clean-up, and it binds the old worker's ports.
        reply = await second.command("create", call="c1", ports=[42300, 42302])
        assert reply["a"] == ["127.0.0.1", 42300]
    finally:
        await second.stop()
