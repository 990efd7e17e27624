"""Fixtures for tests that run ``callrouter`` as a real process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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
