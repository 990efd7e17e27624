"""What the call controller asks its adapter to do (its outputs), in the order given."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from callrouter.call_events import CallEvent
from callrouter.routing.call import Call, TimerKey
from callrouter.sip.events import Flow
from callrouter.sip.message import Message, Request, Response

__all__ = [
    "Action",
    "AwaitMedia",
    "CancelRequest",
    "CancelTimer",
    "Finished",
    "Forget",
    "MediaCommand",
    "Notify",
    "ObserveDialled",
    "ObserveKeepalive",
    "PlayPrompt",
    "Record",
    "Resolve",
    "Respond",
    "SendRequest",
    "SendStateless",
    "StartTimer",
]


@dataclass(frozen=True)
class SendRequest:
    """Send ``request`` to ``flow`` in a new client transaction."""

    request: Request
    flow: Flow
    ref: int | None
    """Report its responses and timeout under this number; None: nobody waits for them."""


@dataclass(frozen=True)
class CancelRequest:
    """CANCEL the INVITE sent as ``ref`` (§9.1)."""

    ref: int


@dataclass(frozen=True)
class Forget:
    """The controller expects nothing more of ``ref``."""

    ref: int


@dataclass(frozen=True)
class Respond:
    """Answer the server transaction ``tid`` (a refused answer is logged, never raised)."""

    tid: str
    response: Response


@dataclass(frozen=True)
class SendStateless:
    """An ACK of a 2xx or a 2xx repeated: no transaction of its own."""

    message: Message
    flow: Flow


@dataclass(frozen=True)
class StartTimer:
    """Fire ``TimerFired(key)`` after ``delay`` seconds (replacing one with the same key)."""

    key: TimerKey
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    key: TimerKey


@dataclass(frozen=True)
class Record:
    """Write a call event to the call journal."""

    event: CallEvent


@dataclass(frozen=True)
class Notify:
    """Raise a webhook event about the call for its client."""

    call_id: uuid.UUID
    client_id: uuid.UUID
    event: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Resolve:
    """Locate ``destination`` (RFC 3263) and wait for the call's media ports if anchored; then
    report ``Resolved``."""

    call: uuid.UUID
    seq: int
    destination: str


@dataclass(frozen=True)
class MediaCommand:
    """``record``, ``release`` or ``withdraw`` the call's anchored media."""

    call: uuid.UUID
    command: str


@dataclass(frozen=True)
class AwaitMedia:
    """Report ``MediaBound`` when the worker has bound the call's ports."""

    call: uuid.UUID


@dataclass(frozen=True)
class PlayPrompt:
    """Play ``prompt`` to the caller in ``codec``; report ``PromptPlayed``."""

    call: uuid.UUID
    prompt: str
    codec: str


@dataclass(frozen=True)
class ObserveDialled:
    """The caller heard ringing or an answer first after ``seconds`` (post-dial delay)."""

    seconds: float


@dataclass(frozen=True)
class ObserveKeepalive:
    """A dialog keepalive OPTIONS went out on a leg, or its final answer decided something."""

    leg: str
    """``caller`` or ``callee``: the leg it was sent on."""
    outcome: str | None = None
    """None: it was sent. Else what its answer did: ``answered`` (2xx), ``lost`` (481: the
    call ended), ``no_answer`` (408 or Timer F: the call ended), ``other`` (any other final
    answer: the call goes on)."""


@dataclass(frozen=True)
class Finished:
    """The call ended: count it, raise ``call.completed`` (after its ``CallEnded`` in the
    journal), and once its record is durable log it."""

    call: Call
    disposition: str
    hangup_by: str
    reason: str


Action = (
    SendRequest
    | CancelRequest
    | Forget
    | Respond
    | SendStateless
    | StartTimer
    | CancelTimer
    | Record
    | Notify
    | Resolve
    | MediaCommand
    | AwaitMedia
    | PlayPrompt
    | ObserveDialled
    | ObserveKeepalive
    | Finished
)
