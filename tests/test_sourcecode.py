"""Linters run as tests, so the README test command is the only gate."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff() -> None:
    result = run("ruff", "check", "callrouter", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", "callrouter", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sans_io_core_imports_no_io() -> None:
    """callrouter/sip/ must stay pure: no sockets, event loops, Twisted or clock reads."""
    forbidden = (
        "import asyncio",
        "import socket",
        "twisted",
        "import time",
        "from time",
        "datetime.now",
        "import select",
        "import threading",
    )
    offenders = []
    for path in (ROOT / "callrouter" / "sip").rglob("*.py"):
        text = path.read_text()
        offenders += [f"{path.name}: {word}" for word in forbidden if word in text]
    assert offenders == []
