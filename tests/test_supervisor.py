"""Supervised background jobs: a job that dies is logged and restarted with a doubling pause."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from callrouter.supervisor import Supervisor
from tests.waiting import until


async def test_a_dying_job_is_restarted_with_doubling_pauses_and_stops_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="callrouter.supervisor")
    runs = 0
    serving = asyncio.Event()

    async def watcher() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise OSError(errno.EMFILE, "Too many open files")
        serving.set()
        await asyncio.Event().wait()  # a healthy service loop runs until cancelled

    supervisor = Supervisor(first_delay=0.01, max_delay=0.04)
    supervisor.start("dialplan watcher", watcher)
    await asyncio.wait_for(serving.wait(), 10)
    assert supervisor.restarts == {"dialplan watcher": 4}
    died = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert died == [
        f"dialplan watcher: died (OSError: [Errno 24] Too many open files); restarting in {d} s"
        for d in ("0.01", "0.02", "0.04", "0.04")
    ]
    # Stopping after failures raises nothing (it used to re-raise the dead job's error).
    await supervisor.stop()


async def test_a_name_is_supervised_once() -> None:
    supervisor = Supervisor()
    supervisor.start("job", asyncio.Event().wait)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start("job", asyncio.Event().wait)  # type: ignore[arg-type]
    await supervisor.stop()


async def test_a_long_healthy_run_resets_the_pause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="callrouter.supervisor")
    now = [0.0]
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        now[0] += 100.0 if runs % 2 else 1.0  # odd runs last past healthy_after, even ones not
        raise RuntimeError("boom")

    supervisor = Supervisor(
        first_delay=0.01, max_delay=1.0, healthy_after=60.0, clock=lambda: now[0]
    )
    supervisor.start("job", job)
    await until(lambda: runs >= 5, "five runs")
    await supervisor.stop()
    pauses = [r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records][:4]
    # healthy (reset), short (doubled), healthy (reset), short (doubled)
    assert pauses == ["0.01 s", "0.02 s", "0.01 s", "0.02 s"]
