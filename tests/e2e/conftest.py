"""Fixtures for tests that run ``callrouter`` as a real process."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import world_traversable_tempdir


@pytest.fixture
def workdir() -> Iterator[Path]:
    """An empty working directory, as a newcomer's fresh checkout would be."""
    path = world_traversable_tempdir("callrouter-e2e-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts SIPp processes for a test; any still running at its end is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(command: list[str], cwd: Path) -> subprocess.Popen[str]:
        cwd.mkdir(exist_ok=True)
        started.append(
            subprocess.Popen(
                command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()
