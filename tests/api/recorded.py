"""A call with a recording, stored the way the router and the media worker store them."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import soundfile

from callrouter.call_events import CallStarted, RecordingFinished
from callrouter.store import recordings as store
from callrouter.store.call_journal import CallJournal
from callrouter.store.ids import new_id
from callrouter.store.recordings import Recording
from tests.api.conftest import Api


def tone_flac(seconds: float = 2.0) -> bytes:
    """Stereo 8 kHz FLAC: 440 Hz on the left, 1000 Hz on the right."""
    t = np.arange(int(8000 * seconds)) / 8000
    audio = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1000 * t)], axis=1)
    out = io.BytesIO()
    soundfile.write(out, (audio * 8000).astype(np.int16), 8000, format="FLAC")
    return out.getvalue()


async def started_call(
    api: Api, client_id: str, number: dict[str, Any], *, record: bool = False
) -> UUID:
    """A call to ``number``, written to the journal as the router writes one."""
    call_id = uuid4()
    async with CallJournal(api.db) as journal:
        journal.record(
            CallStarted(
                call_id=call_id,
                client_id=UUID(client_id),
                number_id=UUID(number["id"]),
                tracking_number=number["e164"],
                caller_number="+447700900123",
                sip_call_id=f"{call_id}@test",
                trunk=None,
                dialplan="default",
                session_id=None,
                attribution={},
                record=record,
                at=datetime.now(UTC),
            )
        )
        await journal.flushed()
    return call_id


async def recorded_call(
    api: Api, client_id: str, number: dict[str, Any]
) -> tuple[Recording, bytes]:
    """A call to ``number`` and its durable recording (file in the vault, row, event)."""
    call_id = await started_call(api, client_id, number, record=True)
    flac = tone_flac()
    service = api.recordings
    service.vault.create_key(call_id)
    service.root.mkdir(parents=True, exist_ok=True)
    with service.vault.writer(call_id, service.root / f"{call_id}.flac") as out:
        out.write(flac)
    # As serve stores it: through the call journal, the row and recording.ready in one go.
    async with CallJournal(
        api.db, webhooks_queued=api.webhooks.wake, recordings_written=service.written
    ) as journal:
        journal.record(
            RecordingFinished(
                call_id=call_id,
                recording_id=call_id,
                event_id=new_id(),
                path=f"{call_id}.flac",
                format="flac",
                bytes=len(flac),
                duration_seconds=2.0,
                peaks={"channels": []},
                interrupted=False,
                truncated_reason=None,
                at=datetime.now(UTC),
            )
        )
        await journal.flushed()
    recording = await store.get(api.db, call_id, None)
    assert recording is not None
    return recording, flac
