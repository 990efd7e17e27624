"""The start-up sweep gives a row to a finalised recording file that has none (a server from
before rows rode the call journal, or a kill between the worker's rename and the spool), when
its call's row is there; a file whose call is gone, or that cannot be read, is kept and
counted, never deleted. Real PostgreSQL, the real journal and vault, files as the media worker
writes them."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import numpy as np
import pytest

from callrouter.call_events import CallStarted
from callrouter.media.encoding import encode
from callrouter.media.recording import WAV_HEADER_BYTES
from callrouter.orphan_recordings import sweep
from callrouter.recordings import Recordings
from callrouter.store import recordings as store
from callrouter.store.call_journal import CallJournal
from callrouter.store.call_rows import Written
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.store.webhooks import WEBHOOKS
from callrouter.vault import Vault

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
    seen: list[Written] = []
    async with CallJournal(pool, recordings_written=seen.append) as journal:
        for call_id in (flac, pcm, shredded, new):
            journal.record(
                CallStarted(
                    call_id=call_id,
                    client_id=client.id,
                    number_id=None,
                    tracking_number="+441515550001",
                    caller_number="+447700900123",
                    sip_call_id=f"{call_id}@carrier",
                    trunk=None,
                    dialplan="default",
                    session_id=None,
                    attribution={},
                    record=True,
                    at=T0,
                )
            )
        await journal.flushed()
        swept = await sweep(pool, vault, root, before, journal.record)
        await journal.flushed()
        assert swept.recorded == 2
        assert swept.without_call == [no_call]
        assert swept.unreadable == [shredded]
        # Swept again (the next start): nothing is left to sweep but what is kept.
        again = await sweep(pool, vault, root, before, journal.record)
        await journal.flushed()
        assert (again.recorded, again.without_call, again.unreadable) == (
            0,
            [no_call],
            [shredded],
        )

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
