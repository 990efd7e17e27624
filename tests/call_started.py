"""A CallStarted event for the journal and recording tests: each changes what it is about."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.call_events import CallStarted


def call_started(call_id: UUID, client_id: UUID, at: datetime, **changes: Any) -> CallStarted:
    """A carrier-a call from +447700900123 to +441515550001, recorded, with no attribution."""
    return replace(
        CallStarted(
            call_id=call_id,
            client_id=client_id,
            number_id=None,
            tracking_number="+441515550001",
            caller_number="+447700900123",
            sip_call_id=f"{call_id}@carrier",
            trunk="carrier-a",
            dialplan="default",
            session_id=None,
            attribution={},
            record=True,
            at=at,
        ),
        **changes,
    )
