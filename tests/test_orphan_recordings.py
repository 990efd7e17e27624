"""The start-up sweep gives a row to a finalised recording file that has none (a server from
before rows rode the call journal, or a kill between the worker's rename and the spool), when
its call's row is there; a file whose call is gone, or that cannot be read, is kept and
counted, never deleted. Real PostgreSQL, the real journal and vault, files as the media worker
writes them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import numpy as np
import pytest

from callrouter.call_events import CallStarted
from callrouter.media.encoding import encode
from callrouter.media.recording import WAV_HEADER_BYTES
from callrouter.orphan_recordings import MARGIN_SECONDS, sweep
from callrouter.recordings import Recordings
from callrouter.store import recordings as store
from callrouter.store.call_journal import CallJournal
from callrouter.store.call_rows import Written
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.webhooks import WEBHOOKS
from callrouter.vault import Vault
from tests.call_started import call_started

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=3)
    yield pool
    await pool.close()


def tone(seconds: float) -> bytes:
    """Interleaved int16 stereo at 8 kHz, as the recorder makes it."""
    t = np.arange(int(8000 * seconds)) / 8000
    audio = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1000 * t)], axis=1)
    return (audio * 8000).astype("<i2").tobytes()


def sealed(vault: Vault, root: Path, recording_id: UUID, suffix: str, data: bytes) -> Path:
    vault.create_key(recording_id)
    path = root / f"{recording_id}.{suffix}"
    with vault.writer(recording_id, path) as out:
        out.write(data)
    return path


def started(call_id: UUID, client_id: UUID) -> CallStarted:
    return call_started(call_id, client_id, T0, trunk=None)


async def test_files_without_rows_get_them_when_their_call_is_there_and_are_kept_otherwise(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    await WEBHOOKS.insert(
        pool,
        {"client_id": client.id, "secret": "s"},
        {"url": "https://hooks.example/in", "events": ["recording.ready"]},
    )
    root = tmp_path / "recordings"
    (root / "raw" / "worker-0").mkdir(parents=True)
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 4096)
    flac, pcm, no_call, shredded, new = (uuid4() for _ in range(5))
    pcm_audio = tone(1.0)
    sealed(vault, root, flac, "flac", encode(tone(2.0), "flac"))
    sealed(vault, root, pcm, "pcm", pcm_audio)
    sealed(vault, root, no_call, "wav", encode(tone(0.5), "wav"))
    sealed(vault, root, shredded, "flac", encode(tone(0.5), "flac"))
    vault.shred(shredded)
    sealed(vault, root, uuid4(), "raw.part", pcm_audio)  # a raw stream: recover's, not ours
    (root / "notes.txt").write_text("not a recording")
    before = time.time()
    fresh = sealed(vault, root, new, "flac", encode(tone(0.5), "flac"))
    os.utime(fresh, (before + 1, before + 1))  # finalised by this run's workers: they report it

    recordings = Recordings(pool, vault, root)
    mark = tmp_path / "recordings-swept.json"
    seen: list[Written] = []
    async with CallJournal(pool, recordings_written=seen.append) as journal:
        for call_id in (flac, pcm, shredded, new):
            journal.record(started(call_id, client.id))
        await journal.flushed()
        swept = await sweep(pool, vault, root, before, journal=journal, mark=mark)
        await journal.flushed()
        assert swept.recorded == 2
        assert (swept.since, swept.why_full, swept.checked) == (None, "no sweep mark yet", 4)
        assert swept.without_call == [no_call]
        assert swept.unreadable == [shredded]
        # Swept again (the next start): nothing is left to sweep but what is kept.
        again = await sweep(pool, vault, root, before + 1, journal=journal, mark=mark)
        await journal.flushed()
        assert (again.recorded, again.without_call, again.unreadable) == (
            0,
            [no_call],
            [shredded],
        )
        assert again.since == before - MARGIN_SECONDS

    assert sorted(r.id for w in seen for r in w.recordings) == sorted([flac, pcm])
    whole = await store.get(pool, flac, client.id)
    assert whole is not None and whole.format == "flac" and whole.duration_seconds == 2.0
    raw = await store.get(pool, pcm, client.id)
    assert raw is not None and raw.format == "pcm" and raw.duration_seconds == 1.0
    assert raw.bytes == WAV_HEADER_BYTES + len(pcm_audio)
    peaks = await pool.fetchval("SELECT peaks FROM recordings WHERE id = $1", pcm)
    assert peaks["frames"] == 8000 and len(peaks["channels"]) == 2
    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 2
    assert await store.get(pool, new, None) is None
    # Kept, never deleted: the file whose call is gone and the one that cannot be read.
    assert (root / f"{no_call}.wav").exists() and (root / f"{shredded}.flac").exists()
    assert await store.pending_disposals(pool) == []
    # Given a row, a swept file plays back.
    reader = await recordings.open(pcm, raw.path)
    try:
        assert reader.read_range(WAV_HEADER_BYTES, reader.plaintext_size) == pcm_audio
    finally:
        reader.close()


async def client_id(pool: asyncpg.Pool[asyncpg.Record]) -> UUID:
    return (await CLIENTS.insert(pool, {}, {"name": "Acme"})).id


def changed_at(path: Path, seconds: float) -> None:
    """Date the file's last write at ``seconds``: later than now, the only way to make a file
    newer than a mark (its ctime, the other half of its time, is always now)."""
    os.utime(path, (seconds, seconds))


async def test_a_start_with_a_mark_checks_only_what_changed_since_and_what_it_kept(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    """The kill this is for: a file finalised while a server ran (after its start wrote the
    mark) whose row never landed gets it at the next start; the files the mark covers are not
    looked at again, save those kept without a row, still counted."""
    owner = await client_id(pool)
    root = tmp_path / "recordings"
    root.mkdir()
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 4096)
    mark = tmp_path / "recordings-swept.json"
    old = [uuid4() for _ in range(30)]
    gone = uuid4()
    for recording_id in old:
        sealed(vault, root, recording_id, "flac", encode(tone(0.1), "flac"))
    sealed(vault, root, gone, "wav", encode(tone(0.1), "wav"))
    # Times are pushed ahead of the clock (a file's time can only be set forward): the first
    # start two margins ahead, so that every file here is a margin older than its mark.
    now = time.time()
    first = now + 2 * MARGIN_SECONDS
    async with CallJournal(pool) as journal:
        for recording_id in old:
            journal.record(started(recording_id, owner))
        await journal.flushed()
        swept = await sweep(pool, vault, root, first, journal=journal, mark=mark)
        assert (swept.since, swept.checked, swept.recorded) == (None, 31, 30)
        assert swept.without_call == [gone] and swept.mark_written
        assert json.loads(mark.read_bytes())["kept"] == [f"{gone}.wav"]

        # The first server finalises a file after its start, and is killed before the row.
        lost = uuid4()
        journal.record(started(lost, owner))
        await journal.flushed()
        changed_at(sealed(vault, root, lost, "flac", encode(tone(0.3), "flac")), first + 60)
        second = first + MARGIN_SECONDS / 2
        swept = await sweep(pool, vault, root, second, journal=journal, mark=mark)
        assert swept.since == first - MARGIN_SECONDS
        assert (swept.checked, swept.passed_over) == (2, 30)  # the lost one and the kept one
        assert (swept.recorded, swept.without_call) == (1, [gone])
    row = await store.get(pool, lost, owner)
    assert row is not None and row.duration_seconds == 0.3
    assert json.loads(mark.read_bytes())["swept_before"] == second


async def test_a_raw_stream_renamed_into_place_with_an_old_write_time_is_still_checked(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    """A raw stream kept as ``<id>.pcm`` keeps the time of its last write when recover
    renames it into place, days after a long stop: the rename (its ctime) is what counts."""
    owner = await client_id(pool)
    root = tmp_path / "recordings"
    (root / "raw" / "worker-0").mkdir(parents=True)
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 4096)
    mark = tmp_path / "recordings-swept.json"
    async with CallJournal(pool) as journal:
        swept = await sweep(pool, vault, root, time.time(), journal=journal, mark=mark)
        assert swept.mark_written and swept.checked == 0
        recording_id = uuid4()
        journal.record(started(recording_id, owner))
        await journal.flushed()
        raw = sealed(vault, root / "raw" / "worker-0", recording_id, "raw", tone(0.5))
        ten_days_ago = time.time() - 10 * MARGIN_SECONDS
        changed_at(raw, ten_days_ago)
        os.replace(raw, root / f"{recording_id}.pcm")
        assert (root / f"{recording_id}.pcm").stat().st_mtime == ten_days_ago
        swept = await sweep(pool, vault, root, time.time() + 1, journal=journal, mark=mark)
        assert swept.since is not None and (swept.checked, swept.recorded) == (1, 1)
    row = await store.get(pool, recording_id, owner)
    assert row is not None and row.format == "pcm" and row.duration_seconds == 0.5


@pytest.mark.parametrize(
    ("mark_text", "why"),
    [
        (b'{"version": 1, "recordings_dir": "', "cannot be read"),
        (b"\xff\xfe", "cannot be read"),
        (b"[]", "is not a version 1 mark"),
        (b'{"version": 1, "swept_before": "yesterday"}', "is damaged"),
        (b'{"version": 1, "recordings_dir": "ROOT", "swept_before": 1e400, "kept": []}', "damaged"),
        (
            b'{"version": 1, "recordings_dir": "/elsewhere", "swept_before": 0, "kept": []}',
            "/elsewhere",
        ),
        (
            b'{"version": 1, "recordings_dir": "ROOT", "swept_before": 9e9, "kept": []}',
            "stepped back",
        ),
    ],
)
async def test_a_mark_that_cannot_be_used_gives_a_full_sweep_and_says_why(
    pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mark_text: bytes,
    why: str,
) -> None:
    root = tmp_path / "recordings"
    root.mkdir()
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 4096)
    names = [sealed(vault, root, uuid4(), "wav", encode(tone(0.1), "wav")).name for _ in range(3)]
    mark = tmp_path / "recordings-swept.json"
    mark.write_bytes(mark_text.replace(b"ROOT", str(root.resolve()).encode()))
    before = time.time() + MARGIN_SECONDS * 2  # past every file by more than the margin
    async with CallJournal(pool) as journal:
        swept = await sweep(pool, vault, root, before, journal=journal, mark=mark)
    assert swept.since is None and why in swept.why_full
    assert swept.checked == 3 and len(swept.without_call) == 3
    assert any(
        r.levelname == "WARNING"
        and "checking every file" in r.getMessage()
        and why in r.getMessage()
        for r in caplog.records
    )
    written = json.loads(mark.read_bytes())  # replaced by a good one
    assert (written["swept_before"], sorted(written["kept"])) == (before, sorted(names))


async def test_ids_go_to_the_database_a_batch_at_a_time(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    root.mkdir()
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 4096)
    for _ in range(2_500):  # names are all the check needs: none of these calls is there
        (root / f"{uuid4()}.flac").write_bytes(b"")
    asked: list[int] = []
    async with pool.acquire() as connection:
        connection.add_query_logger(
            lambda q: asked.append(len(q.args[0])) if "unnest" in q.query else None
        )
        async with CallJournal(pool) as journal:
            swept = await sweep(
                connection, vault, root, time.time() + 1, journal=journal, mark=tmp_path / "m"
            )
    assert store.WITHOUT_ROWS_BATCH == 1_000 and asked == [1_000, 1_000, 500]
    assert swept.checked == 2_500 and len(swept.without_call) == 2_500


@contextlib.contextmanager
def full_disk(under: Path) -> Iterator[Path]:
    """A tmpfs of 64 KiB with every page taken (needs root: mount(2))."""
    disk = under / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
async def test_a_full_disk_under_the_mark_is_logged_and_the_sweep_goes_on(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await client_id(pool)
    root = tmp_path / "recordings"
    root.mkdir()
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 4096)
    with full_disk(tmp_path) as disk:
        mark = disk / "recordings-swept.json"
        async with CallJournal(pool) as journal:
            swept = await sweep(pool, vault, root, time.time(), journal=journal, mark=mark)
            assert swept.mark_written
            previous = mark.read_bytes()
            descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                with contextlib.suppress(OSError):
                    while True:
                        os.write(descriptor, b"\0" * 4096)
            finally:
                os.close(descriptor)
            recording_id = uuid4()
            journal.record(started(recording_id, owner))
            await journal.flushed()
            sealed(vault, root, recording_id, "flac", encode(tone(0.2), "flac"))
            swept = await sweep(pool, vault, root, time.time() + 1, journal=journal, mark=mark)
        assert not swept.mark_written and swept.recorded == 1
        assert await store.get(pool, recording_id, owner) is not None
        # The previous mark stays, whole (still true), and no temp file is left beside it.
        assert mark.read_bytes() == previous
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "recordings-swept.json"]
    assert any(
        r.levelname == "ERROR"
        and "cannot write the sweep mark" in r.getMessage()
        and "No space left on device" in r.getMessage()
        for r in caplog.records
    )
