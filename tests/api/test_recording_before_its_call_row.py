"""A recording finished before the call journal has written its call's row waits for the row.

The journal writes call rows behind the calls; the media worker can finish a short call's
recording first. Written at once, the recording's row would find no call, the file would be
taken for one whose call was erased meanwhile, and shredded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

from callrouter.app import MediaEvents
from callrouter.call_events import CallStarted
from callrouter.metrics import Metrics
from callrouter.store.call_journal import CallJournal
from tests.api.conftest import Api
from tests.api.recorded import tone_flac


async def test_a_recording_finished_before_its_call_row_is_kept(api: Api) -> None:
    client_id, _ = await api.client_with_key("Acme")
    number = await api.ok(
        "POST", "/v1/numbers", json={"client_id": client_id, "e164": "+441515550001"}
    )
    call_id = uuid4()
    flac = tone_flac()
    service = api.recordings
    service.vault.create_key(call_id)
    service.root.mkdir(parents=True, exist_ok=True)
    with service.vault.writer(call_id, service.root / f"{call_id}.flac") as out:
        out.write(flac)
    ready = {
        "event": "recording_ready",
        "call": str(call_id),
        "recording": {
            "id": str(call_id), "path": f"{call_id}.flac", "format": "flac",
            "bytes": len(flac), "duration_seconds": 2.0, "peaks": {}, "interrupted": False,
        },
    }  # fmt: skip
    events = MediaEvents(service, Metrics())
    async with api.db.acquire() as blocker, CallJournal(api.db) as journal:
        events.journal = journal
        locked = blocker.transaction()
        await locked.start()
        # The journal's write of the call row waits behind this lock: the journal lags.
        await blocker.execute("LOCK TABLE calls IN EXCLUSIVE MODE")
        journal.record(
            CallStarted(
                call_id=call_id, client_id=client_id, number_id=number["id"],
                tracking_number=number["e164"], caller_number=None,
                sip_call_id=f"{call_id}@test", trunk=None, dialplan="default",
                session_id=None, attribution={}, record=True, at=datetime.now(UTC),
            )
        )  # fmt: skip
        handling = asyncio.create_task(events.recording_finished(ready))
        # Room for the handler to get as far as it goes while the row is missing: a few dozen
        # round trips to the database (written at once, it needs four or five).
        for _ in range(50):
            if handling.done():
                break
            await api.db.fetchval("SELECT 1")
        await locked.rollback()
        await asyncio.wait_for(handling, 30)
    rows = await api.db.fetch("SELECT id FROM recordings WHERE call_id = $1", call_id)
    assert [r["id"] for r in rows] == [call_id]
    assert not await api.db.fetchval(
        "SELECT count(*) FROM recording_disposals WHERE recording_id = $1", call_id
    )
    assert (service.root / f"{call_id}.flac").exists()
