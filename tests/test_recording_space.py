"""The recordings filesystem's free space against ``[media] min_free_bytes``, on a real disk."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from callrouter.recording_space import RecordingSpace


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_new_recordings_are_refused_below_the_floor_and_the_change_is_announced(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    space = RecordingSpace(tmp_path, min_free_bytes=0, announce=said.append)
    assert space.status == "unknown" and space.refusal() is not None  # not measured yet
    space.check()
    assert space.status == "ok" and space.refusal() is None
    assert space.free_bytes is not None and space.free_bytes > 0
    assert said == [f"media: recording space ok: {space.describe()}"]

    # A floor above what the disk has (a petabyte) is a full disk for recording purposes.
    space.min_free_bytes = 1 << 50
    space.check()
    refusal = space.refusal()
    assert refusal is not None and refusal.startswith("not enough space for recordings: ")
    assert "media.min_free_bytes is 1073741824.0 MiB" in refusal
    assert space.view() == {
        "status": "low",
        "free_bytes": space.free_bytes,
        "min_free_bytes": 1 << 50,
    }
    assert len(said) == 2 and said[1].startswith("media: recording space low: ")
    space.check()
    assert len(said) == 2  # only changes are announced


def test_a_recordings_directory_that_cannot_be_checked_refuses(tmp_path: Path) -> None:
    space = RecordingSpace(tmp_path / "missing", min_free_bytes=0, announce=lambda _: None)
    space.check()
    assert space.status == "unknown"
    assert space.refusal() == (
        f"not enough space for recordings: {tmp_path / 'missing'}: No such file or directory"
    )


async def test_the_figure_is_kept_fresh_in_the_background(tmp_path: Path) -> None:
    space = RecordingSpace(tmp_path, min_free_bytes=free_bytes(tmp_path) // 2)
    task = asyncio.create_task(space.run(every=0.05))
    try:
        for _ in range(200):
            if space.free_bytes is not None:
                break
            await asyncio.sleep(0.01)
        assert space.status == "ok"
    finally:
        task.cancel()
