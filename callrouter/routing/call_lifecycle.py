"""The base of the call controller (routing/controller.py): the calls in progress, how actions
are emitted and timers kept, and how a call ends (the caller's final answer, BYE on both legs,
our 2xx repeated until the caller's ACK, the end recorded once). States change only through
the tables of call_states.py.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from callrouter.call_events import AttemptEnded, CallEnded, CallEvent
from callrouter.routing.actions import (
    Action,
    CancelTimer,
    Finished,
    Forget,
    MediaCommand,
    Notify,
    ObserveDialled,
    Record,
    Respond,
    SendRequest,
    SendStateless,
    StartTimer,
)
from callrouter.routing.call import (
    DISPOSITION,
    Abandoned,
    Branch,
    Call,
    Probe,
    Relay,
    TimerKey,
    webhook_data,
)
from callrouter.routing.call_states import CallInput, CallState, next_call_state
from callrouter.routing.outbound import ack_request, contact_uri, dialog_flow
from callrouter.sip.dialogs import Dialog, DialogId
from callrouter.sip.errors import SipError
from callrouter.sip.events import Flow
from callrouter.sip.message import Request
from callrouter.sip.session_timer import SessionExpires, bye_before
from callrouter.sip.transactions import Timers

__all__ = ["CEILING", "SESSION_EXPIRED", "CallLifecycle", "LocalAddresses", "MediaPort"]

log = logging.getLogger(__name__)


SESSION_EXPIRED = "session expired"
"""The hang-up reason of a call whose session interval passed without a refresh."""

CEILING = "max call seconds"
"""The hang-up reason of a call without a session timer that reached ``max_call_seconds``."""


class LocalAddresses(Protocol):
    """What we advertise towards a peer (the SIP service's listener table)."""

    def sent_by(self, flow: Flow) -> str: ...

    def local_host(self, flow: Flow) -> str: ...


class MediaPort(Protocol):
    """The media anchor's SDP side: offers and answers rewritten to point at the worker's ports
    (routing/anchoring.py MediaAnchor). Answers at once; what it tells the worker, it sends
    without waiting."""

    def __contains__(self, key: object) -> bool: ...

    def offer(self, key: str, body: bytes, *, nat: bool) -> tuple[bytes | None, str | None]: ...

    def towards_caller(self, key: str, body: bytes) -> bytes: ...

    def towards_callee(self, key: str, body: bytes) -> bytes: ...

    def early_answer(self, key: str) -> tuple[bytes, str]: ...


@dataclass(eq=False)
class CallLifecycle:
    """Every call in progress, and what the parts of the controller share.

    :param local: the addresses we advertise (Contact, From host, Call-ID host, Via).
    :param timers: SIP timer values (T1, T2) for repeating our 2xx until the caller's ACK.
    :param media: the media anchor (None: recording is not available).
    :param target_timeout: seconds a target may stay silent (not even 100 Trying) before the
        branch's next target is tried.
    :param session_expires: the session interval destinations are asked for when the caller
        asks for none (routing/session_timers.py); 0 asks for none.
    :param max_call_seconds: how long an answered call without a session timer may last; 0
        for no limit.
    :param dialog_keepalive_seconds: how often an answered call without a session timer
        sends OPTIONS on both legs to learn that neither peer has lost the dialog; 0: never.
    """

    local: LocalAddresses
    timers: Timers
    media: MediaPort | None = None
    target_timeout: float = 5.0
    session_expires: int = 1800
    max_call_seconds: float = 14400.0
    dialog_keepalive_seconds: float = 60.0
    calls: dict[str, Call] = field(default_factory=dict)
    """Calls in progress by their caller's INVITE transaction."""
    _by_id: dict[uuid.UUID, Call] = field(default_factory=dict)
    _refs: dict[int, tuple[Call, Branch | Relay | Probe | Abandoned]] = field(default_factory=dict)
    _connected: dict[DialogId, tuple[Call, bool]] = field(default_factory=dict)
    """Every connected leg by its dialog id, with whether it is the caller's."""
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _out: list[Action] = field(default_factory=list)
    _now: float = 0.0
    _at: datetime | None = None

    def leg_of(self, request: Request) -> tuple[Call, bool] | None:
        """The call and leg (True: the caller's) an in-dialog request belongs to."""
        return self._connected.get((request.call_id, request.to.tag or "", request.from_.tag or ""))

    # -- emitting ----------------------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _record(self, event: CallEvent) -> None:
        self._emit(Record(event))

    @property
    def _wall(self) -> datetime:
        assert self._at is not None
        return self._at

    def _start_timer(self, call: Call, kind: str, delay: float, ref: int = 0) -> None:
        key = TimerKey(call.id, kind, ref)
        call.timers.add(key)
        self._emit(StartTimer(key, delay))

    def _stop_timer(self, call: Call, kind: str, ref: int = 0) -> None:
        key = TimerKey(call.id, kind, ref)
        if key in call.timers:
            call.timers.discard(key)
            self._emit(CancelTimer(key))

    def _send(
        self, request: Request, flow: Flow, target: tuple[Call, Branch | Relay | Probe] | None
    ) -> int:
        ref = next(self._counter)
        if target is not None:
            self._refs[ref] = target
            target[0].refs.add(ref)
        self._emit(SendRequest(request, flow, ref if target is not None else None))
        return ref

    def _forget(self, call: Call, ref: int) -> None:
        if self._refs.pop(ref, None) is not None:
            call.refs.discard(ref)
            self._emit(Forget(ref))

    def _notify(self, call: Call, event: str) -> None:
        self._emit(Notify(call.id, call.number.client_id, event, webhook_data(call)))

    def _contact(self, flow: Flow) -> str:
        return contact_uri(flow, self.local.sent_by(flow))

    # -- both legs ---------------------------------------------------------------------------------

    def _leg_flow(self, call: Call, *, to_caller: bool) -> Flow:
        """Where the leg's dialog started: the caller's source, or the callee's target."""
        if to_caller:
            return call.flow
        assert call.callee is not None and call.callee.flow is not None
        return call.callee.flow

    def _dialog_flow(self, call: Call, dialog: Dialog, fallback: Flow) -> Flow:
        nat = dialog is call.caller and call.trunk is not None and call.trunk.nat
        return dialog_flow(dialog, fallback, behind_nat=nat)

    def _ack(self, branch: Branch, dialog: Dialog) -> None:
        assert branch.request is not None and branch.flow is not None
        flow = dialog_flow(dialog, branch.flow)
        ack = ack_request(dialog, branch.request.cseq.number, flow, self.local.sent_by(flow))
        self._emit(SendStateless(ack, flow))

    def _bye(self, call: Call, dialog: Dialog | None, flow: Flow | None) -> None:
        if dialog is not None and flow is not None:
            self._send(dialog.request("BYE"), self._dialog_flow(call, dialog, flow), None)

    def _bye_both(self, call: Call) -> None:
        self._bye(call, call.caller, call.flow)
        if call.callee is not None:
            self._bye(call, call.callee.dialog, call.callee.flow)

    def _repeat_answer(self, call: Call) -> None:
        """§13.3.1.4: our 2xx goes again until the caller ACKs it; without an ACK by 64*T1, the
        call ends with BYE on both legs."""
        repeater = call.repeater
        if repeater is None or repeater.deadline is None:
            if repeater is not None and repeater.gave_up and call.state is CallState.ANSWERED:
                self._bye_both(call)
                self._end(call, "answered", "system", "no ACK from the caller")
            return
        self._start_timer(call, "answer", max(0.0, repeater.deadline - self._now))

    def _keep_alive(self, call: Call, session: SessionExpires | None) -> None:
        """A 2xx to the call's INVITE or to a refresh (re-INVITE, UPDATE) settled ``session``:
        the call ends if no refresh comes within it (RFC 4028 §10, BYE before it expires), or,
        without one, when it has lasted ``max_call_seconds``. An interval longer than that
        ceiling watches nothing the ceiling would not, so the ceiling stays armed too (a peer
        answering a day-long interval cannot keep a dead call up past it). Without a session
        timer, OPTIONS on both legs every ``dialog_keepalive_seconds`` find a peer that lost
        the dialog long before the ceiling (routing/keepalives.py); with one, the refreshes
        already prove both ends alive."""
        call.session = session
        if session is not None:
            self._start_timer(call, "session", bye_before(session.interval))
            self._stop_timer(call, "keepalive")
        else:
            self._stop_timer(call, "session")
            if self.dialog_keepalive_seconds and call.answered is not None:
                self._start_timer(call, "keepalive", self.dialog_keepalive_seconds)
        unwatched = session is None or session.interval > self.max_call_seconds
        if self.max_call_seconds and call.answered is not None and unwatched:
            lasted = self._now - call.answered
            self._start_timer(call, "ceiling", max(0.0, self.max_call_seconds - lasted))
        else:
            self._stop_timer(call, "ceiling")

    def _hang_up(self, call: Call, reason: str) -> None:
        """End an answered call from our side: BYE to both legs."""
        if call.state is not CallState.ANSWERED:
            return
        self._bye_both(call)
        self._end(call, "answered", "system", reason)

    # -- endings -----------------------------------------------------------------------------------

    def _dialled(self, call: Call) -> None:
        """The caller hears ringing or an answer for the first time: the post-dial delay."""
        if not call.ringing:
            self._emit(ObserveDialled(self._now - call.arrived))

    def _answer_caller(self, call: Call, status: int) -> None:
        assert call.request is not None  # a call is refused or cancelled only while routed
        try:
            answer = call.request.response(status, None, to_tag=call.local_tag)
        except SipError as exc:
            log.info("call %s: could not answer the caller %d: %s", call.id, status, exc)
            return
        self._emit(Respond(call.tid, answer))

    def _fail(self, call: Call, status: int, outcome: str, reason: str) -> None:
        self._answer_caller(call, status)
        hangup_by = "system" if outcome != "busy" else "callee"
        self._end(call, DISPOSITION.get(outcome, "failed"), hangup_by, reason)

    def _end(self, call: Call, disposition: str, hangup_by: str, reason: str) -> None:
        if call.state is CallState.ENDED:
            return
        if call.callee is not None and disposition == "answered":
            self._record(
                AttemptEnded(call.id, call.callee.seq, "answered", 200, reason, self._wall)
            )
        call.state = next_call_state(call.state, CallInput.ENDED)
        self._emit(MediaCommand(call.id, "release"))
        call.anchored = False
        for key in sorted(call.timers, key=lambda k: (k.kind, k.ref)):
            self._emit(CancelTimer(key))
        call.timers.clear()
        self._record(CallEnded(call.id, disposition, hangup_by, reason, self._wall))
        self._emit(Finished(call, disposition, hangup_by, reason))
        self.calls.pop(call.tid, None)
        self._by_id.pop(call.id, None)
        for ref in sorted(call.refs):
            _, target = self._refs[ref]
            waiting = isinstance(target, Branch) and target.ref == ref and not target.final
            if waiting or isinstance(target, Abandoned):
                continue  # its final answer may still come: a late 2xx is ACKed and hung up
            self._forget(call, ref)
        for leg in (call.caller, call.callee.dialog if call.callee else None):
            if leg is not None:
                self._connected.pop(leg.id, None)
