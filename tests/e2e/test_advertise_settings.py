"""``serve`` refuses an advertised address no peer could use, naming the setting, before it
starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--sip-advertise", "0.0.0.0"], "sip.advertise: '0.0.0.0' is a wildcard"),
        (["--sip-advertise", "203.0.113.5:70000"], "sip.advertise: '203.0.113.5:70000': port"),
        (["--media-advertise", "media.example.com"], "media.advertise: 'media.example.com' is"),
    ],
)
def test_a_bad_advertise_setting_stops_serve_with_its_name(
    flags: list[str], error: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callrouter", "serve", "--data-dir", str(tmp_path / "data"),
         *flags],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"callrouter: error: {error}" in result.stderr, result.stderr
    assert not (tmp_path / "data" / "postgres").exists()  # nothing was started
