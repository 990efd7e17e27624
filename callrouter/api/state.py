"""Typed keys for the services the API reads from its Application (set by app.py)."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

import asyncpg
from aiohttp import web

from callrouter.privacy.rights import PrivacyRights
from callrouter.ratelimit import TokenBuckets
from callrouter.recording_space import RecordingSpace
from callrouter.recordings import Recordings
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.sessions import Sessions
from callrouter.webhooks import WebhookSender


class CallControl(Protocol):
    """What the API may ask of live calls (the router's B2BUA)."""

    def pause_recording(self, call_id: UUID, paused: bool) -> str | None:
        """Pause or resume a live call's recording; None when done, else why not."""
        ...


class Readiness(Protocol):
    """What /v1/ready reports: whether each part a call needs is up."""

    async def check(self) -> dict[str, bool]:
        """Each part (database, media worker) by name, True when it is up."""
        ...


DATABASE = web.AppKey("database", asyncpg.Pool)
SESSIONS = web.AppKey("sessions", Sessions)
"""The in-memory pools and visitor sessions (absent when the API runs without the router)."""
PUBLIC_RATE = web.AppKey("public_rate", TokenBuckets)
"""Per-address limits for the public (pool key) routes, which have no API key to limit."""
WEBHOOK_SENDER = web.AppKey("webhook_sender", WebhookSender)
"""Queues events for clients' webhooks (absent when this process sends none)."""
PRIVACY = web.AppKey("privacy", PrivacyRights)
"""Privacy requests, suppression list and retention (without it, /v1/privacy is not served)."""
RECORDINGS = web.AppKey("recordings", Recordings)
"""Encrypted recordings: downloads and shredding (without it, /v1/recordings is not served)."""
DIALPLANS = web.AppKey("dialplans", DialplanLibrary)
"""The dialplans in service, which a number must name (absent when the API runs without the
router: then any well-formed name is taken)."""
RECORDING_SPACE = web.AppKey("recording_space", RecordingSpace)
"""Free space for recordings against ``[media] min_free_bytes`` (absent without a media worker)."""
BODY_TIMEOUT = web.AppKey("body_timeout", float)
"""Seconds a request body may take to arrive once its headers are in (slow-body attacks)."""
READINESS = web.AppKey("readiness", Readiness)
"""The parts /v1/ready checks (absent when the API runs without the router: only the database)."""
CALL_CONTROL = web.AppKey("call_control", CallControl)
"""Live calls (absent when the API runs without the router)."""
