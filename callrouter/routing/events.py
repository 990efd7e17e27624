"""What the call controller is told (its inputs), each with the leg or reference it is about.

``ref`` is the controller's own number for a request it asked to send (an outbound INVITE, a
relayed in-dialog request): the adapter maps it to the transaction the SIP layer created, so
the controller never sees transaction ids of its own requests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from callrouter.routing.call import Call, TimerKey
from callrouter.routing.trunks import Trunk
from callrouter.sip.events import Flow
from callrouter.sip.message import Request, Response
from callrouter.sip.uri import SipUri

__all__ = [
    "AckArrived",
    "CallArrived",
    "CallerCancelled",
    "ControllerEvent",
    "InDialogRequest",
    "MediaBound",
    "MediaRefused",
    "MediaStopped",
    "PromptPlayed",
    "Resolved",
    "Responded",
    "ServerStopping",
    "StrayResponse",
    "TimedOut",
    "TimerFired",
]


@dataclass(frozen=True)
class CallArrived:
    """A caller's INVITE passed admission; ``call`` holds its dialplan steps and attribution."""

    call: Call
    dialplan_found: bool = True
    """False: the number's dialplan does not exist (the caller gets 480)."""


@dataclass(frozen=True)
class Resolved:
    """A branch's destination was located (and the call's media ports bound, if anchored)."""

    call: uuid.UUID
    seq: int
    """The branch (attempt number)."""
    uri: SipUri | None
    """None: the destination cannot be reached (no trunk, bad URI)."""
    trunk: Trunk | None
    """The outbound trunk an E.164 destination goes through."""
    flows: list[Flow]
    """RFC 3263 targets in order; empty: none found."""
    media_failure: str | None = None
    """Why the call's media ports could not be bound (it goes on unrecorded)."""


@dataclass(frozen=True)
class Responded:
    """A response to a request the controller sent (``ref``)."""

    ref: int
    response: Response


@dataclass(frozen=True)
class TimedOut:
    """The request ``ref`` got no final response (Timer B or F)."""

    ref: int


@dataclass(frozen=True)
class StrayResponse:
    """A response matching no transaction (a 2xx retransmitted after ours ended)."""

    response: Response
    flow: Flow


@dataclass(frozen=True)
class CallerCancelled:
    """The caller sent CANCEL for its INVITE (transaction ``tid``)."""

    tid: str


@dataclass(frozen=True)
class InDialogRequest:
    """A request with a To tag on one of the call's legs (BYE, re-INVITE, UPDATE, INFO)."""

    tid: str
    request: Request


@dataclass(frozen=True)
class AckArrived:
    """An ACK on a leg (the caller's ACK of our 2xx stops its repetition)."""

    request: Request


@dataclass(frozen=True)
class TimerFired:
    key: TimerKey


@dataclass(frozen=True)
class MediaBound:
    """The media worker bound an anchored call's ports (``failure``: why it could not)."""

    call: uuid.UUID
    failure: str | None


@dataclass(frozen=True)
class PromptPlayed:
    """An announcement finished (``error``: why it was not played)."""

    call: uuid.UUID
    error: str | None = None


@dataclass(frozen=True)
class MediaRefused:
    """The media worker refused a command of the call: it goes on unrecorded."""

    call: uuid.UUID
    reason: str


@dataclass(frozen=True)
class MediaStopped:
    """The call's media is gone (timeout, or the worker died)."""

    call: uuid.UUID
    reason: str


@dataclass(frozen=True)
class ServerStopping:
    """End every call now: BYE answered calls, cancel the others and answer their callers 503."""


ControllerEvent = (
    CallArrived
    | Resolved
    | Responded
    | TimedOut
    | StrayResponse
    | CallerCancelled
    | InDialogRequest
    | AckArrived
    | TimerFired
    | MediaBound
    | PromptPlayed
    | MediaRefused
    | MediaStopped
    | ServerStopping
)
