"""A recording that finishes before the journal has written its call's row is kept: its row
waits for the call's row instead of taking the missing call for an erased one and shredding the
file. Real PostgreSQL, the real journal, vault and recordings service; the call's row is held
back by a lock on its client row, which the journal's insert needs and the recording's does not
(its insert finds no call, so it checks no foreign key)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from callrouter.call_events import CallStarted
from callrouter.recordings import Recordings
from callrouter.store import recordings as store
from callrouter.store.call_journal import CallJournal
from callrouter.store.clients import CLIENTS
from callrouter.store.database import create_pool
from callrouter.vault import Vault

T0 = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_dsn, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_recording_finished_before_its_call_row_is_written_survives(
    pool: asyncpg.Pool[asyncpg.Record], database_dsn: str, tmp_path: Path
) -> None:
    client = await CLIENTS.insert(pool, {}, {"name": "Acme"})
    call_id = uuid4()
    root = tmp_path / "recordings"
    root.mkdir()
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 64)
    vault.create_key(call_id)
    audio = b"\x00\x01" * 4000
    with vault.writer(call_id, root / f"{call_id}.wav") as out:
        out.write(audio)
    done = store.FinishedFile(
        id=call_id,
        path=f"{call_id}.wav",
        format="wav",
        bytes=len(audio),
        duration_seconds=0.5,
        peaks={},
        interrupted=False,
    )

    admin = await asyncpg.connect(database_dsn)
    try:
        await admin.execute("BEGIN")
        await admin.execute("SELECT 1 FROM clients WHERE id = $1 FOR UPDATE", client.id)
        async with CallJournal(pool) as journal:
            asked = asyncio.Event()

            async def calls_written() -> None:
                asked.set()
                await journal.flushed()

            recordings = Recordings(pool, vault, root, calls_written=calls_written)
            journal.record(
                CallStarted(
                    call_id=call_id,
                    client_id=client.id,
                    number_id=None,
                    tracking_number="+441515550001",
                    caller_number="+447700900123",
                    sip_call_id="late-row@carrier",
                    trunk="carrier-a",
                    dialplan="default",
                    session_id=None,
                    attribution={},
                    record=True,
                    at=T0,
                )
            )

            # The journal's insert of the call row is stuck behind the lock: the row is late.
            async def journal_blocked() -> bool:
                return bool(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    )
                )

            await until(journal_blocked)

            finishing = asyncio.create_task(recordings.finished(call_id, done))

            async def settled() -> bool:
                return finishing.done() or asked.is_set()

            await until(settled)
            assert not finishing.done(), "the recording's row was written before its call's"
            assert await admin.fetchval("SELECT count(*) FROM calls WHERE id = $1", call_id) == 0

            await admin.execute("ROLLBACK")
            recording = await asyncio.wait_for(finishing, timeout=20)
    finally:
        await admin.close()

    assert recording is not None and recording.call_id == call_id
    assert recording.client_id == client.id
    assert await store.get(pool, call_id, client.id) is not None
    assert await store.pending_disposals(pool) == []
    assert (root / f"{call_id}.wav").exists()
    reader = await recordings.open(call_id, done.path)
    try:
        assert reader.read_range(0, reader.plaintext_size) == audio
    finally:
        reader.close()
