"""What happens to a call, as the B2BUA reports it; the call journal makes each one durable.

Times are wall-clock datetimes (UTC) supplied by the caller, never read here. Fields that may
identify a person (the caller's number, the SIP Call-ID, which often names the caller's host,
the visit's attribution, a destination that may be someone's own phone) are left out of an
event's repr, so a log line that shows an event never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

__all__ = [
    "AttemptAnswered",
    "AttemptEnded",
    "AttemptRinging",
    "AttemptStarted",
    "CallAnswered",
    "CallEnded",
    "CallEvent",
    "CallRinging",
    "CallStarted",
    "RecordingFinished",
    "RecordingRefused",
    "WebhookRaised",
]


@dataclass(frozen=True, slots=True)
class CallStarted:
    """An INVITE for one of our numbers was accepted for routing."""

    call_id: UUID
    client_id: UUID
    number_id: UUID | None
    tracking_number: str
    #: E.164 when known; None when withheld or when the caller objected (suppression).
    caller_number: str | None = field(repr=False)
    #: The caller's Call-ID; its host part is often the caller's address.
    sip_call_id: str = field(repr=False)
    trunk: str | None
    dialplan: str | None
    session_id: UUID | None
    #: The attribution snapshot at INVITE time (source, medium, campaign, landing page, ...).
    attribution: dict[str, Any] = field(hash=False, repr=False)
    record: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class CallRinging:
    """The caller first heard ringing (a 180/183 was relayed)."""

    call_id: UUID
    at: datetime


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A destination answered and both legs were connected."""

    call_id: UUID
    at: datetime


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over; ``disposition`` says how."""

    call_id: UUID
    #: answered, busy, no_answer, failed, cancelled, rejected
    disposition: str
    #: caller, callee or system
    hangup_by: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """An outbound leg to one destination was started."""

    call_id: UUID
    seq: int
    #: The number or SIP URI dialled; it may be a person's own phone.
    destination: str = field(repr=False)
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRinging:
    """The destination of attempt ``seq`` is ringing."""

    call_id: UUID
    seq: int
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptAnswered:
    """The destination of attempt ``seq`` answered."""

    call_id: UUID
    seq: int
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    """Attempt ``seq`` is over: answered and hung up, or failed with a result."""

    call_id: UUID
    seq: int
    #: answered, busy, no_answer, rejected, error, cancelled
    result: str
    sip_status: int | None
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RecordingRefused:
    """Recording was wanted but is not happening; the reason goes on the call record."""

    call_id: UUID
    reason: str


@dataclass(frozen=True, slots=True)
class WebhookRaised:
    """A webhook event about the call, for its client's webhooks that want it.

    It rides the journal with the call's own events, so it is on disk (the spool) in the same
    fsync as they are, and it is stored in the same transaction as the rows it reports on: a
    kill while the database is away loses it no more than it loses the call."""

    call_id: UUID
    client_id: UUID
    #: Names the event: each webhook's delivery id is derived from it and the webhook's id, so
    #: a replay of the spool adds no second delivery.
    event_id: UUID
    #: call.started, call.answered, call.completed
    event: str
    #: The body sent, already plain JSON values; it may carry the caller's number.
    payload: dict[str, Any] = field(hash=False, repr=False)
    at: datetime


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    """The media worker finalised the call's recording file (encrypted, fsynced, renamed).

    It rides the journal like the call's own events, so the recording's row and its
    recording.ready event are on disk (the spool) as soon as the file is, and are stored after
    the call's row, once it is there: a kill while the database is away loses neither."""

    call_id: UUID
    recording_id: UUID
    #: Names the recording.ready event: each webhook's delivery id is derived from it.
    event_id: UUID
    #: The final file, relative to the recordings directory: ``<id>.<format>``.
    path: str
    #: flac, wav, or pcm (a raw stream kept as the final file when the disk was full).
    format: str
    #: Size of the decrypted file (what a download serves).
    bytes: int
    duration_seconds: float
    #: The waveform summary (plain JSON values).
    peaks: dict[str, Any] = field(hash=False, repr=False)
    #: Finalised from what a worker that stopped left: the audio may end before the call did.
    interrupted: bool
    #: Why the audio ends before the call did (the disk filled up), or None.
    truncated_reason: str | None
    #: When the file was finished (the recording's end).
    at: datetime


CallEvent = (
    CallStarted
    | CallRinging
    | CallAnswered
    | CallEnded
    | AttemptStarted
    | AttemptRinging
    | AttemptAnswered
    | AttemptEnded
    | RecordingRefused
    | WebhookRaised
    | RecordingFinished
)
