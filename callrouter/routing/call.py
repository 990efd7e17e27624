"""A call as the B2BUA holds it: the inbound leg, each outbound attempt, and relayed requests.

Data only; the B2BUA (b2bua.py) drives it. Kept apart so the state machine's file holds the
state machine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from callrouter.call_events import CallEvent
from callrouter.routing.dialplan import Step
from callrouter.routing.trunks import Trunk
from callrouter.sip.dialogs import AnswerRepeater, Dialog
from callrouter.sip.events import Flow
from callrouter.sip.message import Request
from callrouter.sip.uri import SipUri
from callrouter.store.numbers import Number


class Journal(Protocol):
    """Where call events go: the durable call journal (store/call_journal.py)."""

    def record(self, event: CallEvent) -> None: ...

    async def flushed(self) -> None: ...


def classify(status: int) -> str:
    """The dialplan outcome of a failed attempt's final status."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    if status >= 500 and status != 600:
        return "error"
    return "rejected"


# The caller's answer when the plan ends without a connection, by the last outcome.
FINAL_STATUS = {"busy": 486, "no_answer": 480, "error": 502, "rejected": 480}
DISPOSITION = {"busy": "busy", "no_answer": "no_answer", "error": "failed", "rejected": "rejected"}


@dataclass(eq=False)
class Branch:
    """One outbound leg (an attempt) of a call."""

    seq: int
    destination: str
    tid: str | None = None
    request: Request | None = None
    flow: Flow | None = None
    ringing: bool = False
    cancel_pending: bool = False
    done: bool = False
    outcome: str | None = None
    dialog: Dialog | None = None
    uri: SipUri | None = None
    trunk: Trunk | None = None
    """The outbound trunk an E.164 destination goes through (its caller-ID policy applies)."""
    targets: list[Flow] = field(default_factory=list)
    """RFC 3263 targets not tried yet."""
    target_timer: Any = None
    skipped: list[str] = field(default_factory=list)
    """Targets that failed before the current one (for the attempt's reason)."""
    answered_at_all: bool = False
    """Whether the current target sent any response (a 100 Trying proves it is alive)."""


@dataclass(eq=False)
class Call:
    """One inbound call and everything done for it."""

    id: uuid.UUID
    number: Number
    request: Request
    tid: str
    flow: Flow
    local_tag: str
    steps: list[Step]
    params: dict[str, str]
    record: bool
    arrived: float = 0.0
    """When the caller's INVITE reached us (the reactor's clock), for the post-dial delay."""
    max_duration: float | None = None
    branches: dict[str, Branch] = field(default_factory=dict)
    attempts: int = 0
    state: str = "routing"  # routing -> answered -> ended
    outcomes: list[str] = field(default_factory=list)
    last_status: int | None = None
    continue_on: frozenset[str] = frozenset()
    caller: Dialog | None = None
    callee: Branch | None = None
    ringing: bool = False
    repeater: AnswerRepeater | None = None
    timers: list[Any] = field(default_factory=list)
    ring_timer: Any = None
    session_id: uuid.UUID | None = None
    attribution: dict[str, Any] = field(default_factory=dict)
    caller_number: str | None = None
    """The caller's number as stored and sent in webhooks (None: withheld or suppressed)."""
    presented_number: str | None = None
    """The caller's number as the destination sees it (passing caller ID is part of
    connecting the call, even for a suppressed caller)."""
    record_refusal: str | None = None
    """Why this caller's calls are never recorded (objection, withdrawn consent)."""
    trunk: Trunk | None = None
    """The carrier the call came in on."""
    callee_offer: bytes | None = None
    """The caller's SDP offer as destinations see it (anchored on the media worker when the
    call is recorded; None: the caller's own)."""
    tids: set[str] = field(default_factory=set)
    """Client transactions of this call (branches, relayed requests), to forget at the end."""


@dataclass(eq=False)
class Relay:
    """An in-dialog request passed from one leg to the other, waiting for its answer."""

    call: Call
    incoming_tid: str
    incoming: Request
    towards_caller: bool


def static_attribution(number: Number) -> dict[str, Any]:
    """The attribution of a static (non-pool) number: its own label and campaign fields."""
    fields = {
        "label": number.label,
        "source": number.source,
        "medium": number.medium,
        "campaign": number.campaign,
    }
    return {k: v for k, v in fields.items() if v is not None}
