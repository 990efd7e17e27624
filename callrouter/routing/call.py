"""A call as the controller holds it: the inbound leg, each outbound attempt, relayed requests.

Data only; the call controller (controller.py) drives it, its states and transitions are in
call_states.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from callrouter.call_events import CallEvent
from callrouter.routing.call_states import BranchState, CallState
from callrouter.routing.dialplan import Step
from callrouter.routing.trunks import Trunk
from callrouter.sip.dialogs import AnswerRepeater, Dialog
from callrouter.sip.events import Flow
from callrouter.sip.message import Request
from callrouter.sip.session_timer import SessionExpires
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
    if (status >= 500 and status != 600) or status == 422:
        # A 422 still standing after our retry refused our session interval, not the caller's
        # call: passed on, it would ask the caller for a Min-SE it never sent.
        return "error"
    return "rejected"


# The caller's answer when the plan ends without a connection, by the last outcome.
FINAL_STATUS = {"busy": 486, "no_answer": 480, "error": 502, "rejected": 480}
DISPOSITION = {"busy": "busy", "no_answer": "no_answer", "error": "failed", "rejected": "rejected"}


@dataclass(frozen=True)
class TimerKey:
    """One timer of one call: ``ring`` (the dial step's ring timeout), ``target`` (the target of
    the INVITE ``ref`` stays silent), ``answer`` (our 2xx's next repetition), ``duration`` (the
    dialplan's maximum duration), ``session`` (no refresh within the session interval, RFC
    4028), ``ceiling`` (``max_call_seconds`` of a call without a session timer), ``keepalive``
    (the next in-dialog OPTIONS on both legs of a call without a session timer)."""

    call: uuid.UUID
    kind: str
    ref: int = 0


@dataclass(eq=False)
class Branch:
    """One outbound leg (an attempt) of a call."""

    seq: int
    destination: str
    state: BranchState = BranchState.RESOLVING
    ref: int | None = None
    """The controller's number for the INVITE now out (None: not sent yet)."""
    final: bool = False
    """Whether that INVITE got its final response (or timed out)."""
    request: Request | None = None
    flow: Flow | None = None
    outcome: str | None = None
    dialog: Dialog | None = None
    uri: SipUri | None = None
    trunk: Trunk | None = None
    """The outbound trunk an E.164 destination goes through (its caller-ID policy applies)."""
    targets: list[Flow] = field(default_factory=list)
    """RFC 3263 targets not tried yet."""
    skipped: list[str] = field(default_factory=list)
    """Targets that failed before the current one (for the attempt's reason)."""
    min_se: int | None = None
    """The Min-SE of the 422 its INVITE was sent again with (RFC 4028 §7.4; once only)."""


@dataclass(eq=False)
class Call:
    """One inbound call and everything done for it."""

    id: uuid.UUID
    number: Number
    request: Request | None
    """The caller's INVITE while the call is routed and answered; None once the caller has
    ACKed our 2xx: what reads it after (the in-dialog requests, the call's end) reads the
    dialogs, and a live call's parse would only be walked by every full collection."""
    tid: str
    flow: Flow
    local_tag: str
    steps: list[Step]
    params: dict[str, str]
    record: bool
    arrived: float = 0.0
    """When the caller's INVITE reached us (the controller's clock), for the post-dial delay."""
    max_duration: float | None = None
    answered: float | None = None
    """When the call was answered (the controller's clock), for ``max_call_seconds``."""
    session: SessionExpires | None = None
    """The session interval settled by the last 2xx to an INVITE or UPDATE (None: the call has
    no session timer: dialog keepalives watch it, and ``max_call_seconds`` applies)."""
    state: CallState = CallState.ROUTING
    branches: list[Branch] = field(default_factory=list)
    """The branches of the dial step now running."""
    attempts: int = 0
    outcomes: list[str] = field(default_factory=list)
    last_status: int | None = None
    continue_on: frozenset[str] = frozenset()
    caller: Dialog | None = None
    callee: Branch | None = None
    ringing: bool = False
    repeater: AnswerRepeater | None = None
    timers: set[TimerKey] = field(default_factory=set)
    """The call's timers now armed."""
    session_id: uuid.UUID | None = None
    attribution: dict[str, Any] = field(default_factory=dict)
    journey: list[dict[str, Any]] = field(default_factory=list)
    """The visit's page views up to the call: call.completed carries them."""
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
    anchored: bool = False
    """Whether the call's media goes through the media worker."""
    prompt: str | None = None
    """The announcement waiting for the call's media ports."""
    refs: set[int] = field(default_factory=set)
    """Requests of this call the controller waits on (branches, relayed requests)."""
    sip_call_id: str = field(init=False)
    """The caller's Call-ID (the call's log line names it when the call ends)."""

    def __post_init__(self) -> None:
        assert self.request is not None, "a call starts with the caller's INVITE"
        self.sip_call_id = self.request.call_id


@dataclass(eq=False)
class Abandoned:
    """An INVITE a branch gave up on when its target stayed silent and the next target was
    tried: its transaction lives on, and a late answer must not leave a leg up."""

    request: Request
    flow: Flow
    cancelled: bool = False


@dataclass(eq=False)
class Relay:
    """An in-dialog request passed from one leg to the other, waiting for its answer."""

    call: Call
    incoming_tid: str
    incoming: Request
    towards_caller: bool
    relayed: Request
    """The request as it left on the other leg (the session interval it asked for)."""


@dataclass(eq=False)
class Probe:
    """An in-dialog OPTIONS we sent on one leg to learn whether its peer still holds the
    dialog (a dialog keepalive), waiting for its answer."""

    to_caller: bool
    """True: sent on the caller's leg; False: on the destination's."""


def webhook_data(call: Call, **extra: Any) -> dict[str, Any]:
    """The data of a call's webhook events (``caller_number`` None for a suppressed caller)."""
    return event_data(
        call.id, call.number.e164, call.caller_number, call.session_id, call.attribution, **extra
    )


def event_data(
    call_id: uuid.UUID,
    tracking_number: str,
    caller_number: str | None,
    session_id: uuid.UUID | None,
    attribution: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The data every webhook event of a call carries, whoever raises it (the call's node, or
    the one that closes it as interrupted for a node that is gone)."""
    return {
        "call_id": call_id,
        "tracking_number": tracking_number,
        "caller_number": caller_number,
        "session_id": session_id,
        "attribution": attribution,
        **extra,
    }


def static_attribution(number: Number) -> dict[str, Any]:
    """The attribution of a static (non-pool) number: its own label and campaign fields."""
    fields = {
        "label": number.label,
        "source": number.source,
        "medium": number.medium,
        "campaign": number.campaign,
    }
    return {k: v for k, v in fields.items() if v is not None}
