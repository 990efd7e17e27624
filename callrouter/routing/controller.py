"""The call controller: the B2BUA's call logic as a sans-IO state machine.

Rules of this file:
- Inputs are the events of routing/events.py, each given to :meth:`Controller.handle` with
  ``now`` (the clock timers run on) and ``at`` (the wall-clock time call events carry); the
  output is the list of actions of routing/actions.py, for the adapter (b2bua.py) to carry out
  in order. No sockets, no event loop, no clock: a test drives it with a fake clock.
- Every call is two (or more) independent dialogs joined here: nothing of one leg's Via,
  Contact, Record-Route or Call-ID reaches the other (routing/outbound.py builds what leaves).
  Bodies (SDP) pass across unchanged, or rewritten by the media anchor when a call is recorded.
- The dialplan decides; this file carries it out: dial steps ring their destinations in parallel
  with a ring timer, the first 2xx wins and the others are cancelled (a second 2xx is ACKed and
  hung up, §13.2.2.4), a failed step continues to the next one when its outcome is listed in
  ``continue_on``, else the caller gets the answer. A target that answers 503, times out or
  stays silent is replaced by the branch's next RFC 3263 target (§4.3 of RFC 3263).
- States change only through the tables of call_states.py.
- Every change of state is reported to the call journal as it happens (``Record``), so the
  call record is true even if the process dies a moment later; nothing here waits for it.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    RecordingRefused,
)
from callrouter.routing.actions import (
    Action,
    AwaitMedia,
    CancelRequest,
    CancelTimer,
    Finished,
    Forget,
    MediaCommand,
    Notify,
    ObserveDialled,
    PlayPrompt,
    Record,
    Resolve,
    Respond,
    SendRequest,
    SendStateless,
    StartTimer,
)
from callrouter.routing.call import (
    DISPOSITION,
    FINAL_STATUS,
    Abandoned,
    Branch,
    Call,
    Relay,
    TimerKey,
    classify,
    webhook_data,
)
from callrouter.routing.call_states import (
    BRANCH_TRANSITIONS,
    BranchInput,
    BranchState,
    CallInput,
    CallState,
    next_branch_state,
    next_call_state,
)
from callrouter.routing.dialplan import Announce, Dial, Reject, SetDuration, SetRecording
from callrouter.routing.events import (
    AckArrived,
    CallArrived,
    CallerCancelled,
    ControllerEvent,
    InDialogRequest,
    MediaBound,
    MediaRefused,
    MediaStopped,
    PromptPlayed,
    Resolved,
    Responded,
    ServerStopping,
    StrayResponse,
    TimedOut,
    TimerFired,
)
from callrouter.routing.outbound import (
    ack_request,
    contact_uri,
    dialog_flow,
    outbound_invite,
)
from callrouter.sip.dialogs import AnswerRepeater, Dialog, DialogId
from callrouter.sip.errors import SipError
from callrouter.sip.events import Flow
from callrouter.sip.message import Request, Response
from callrouter.sip.transactions import Timers

__all__ = ["SHUTDOWN", "Controller", "LocalAddresses", "MediaPort"]

log = logging.getLogger(__name__)

SHUTDOWN = "server shutdown"
"""The hang-up reason of calls the server ended because it was stopped."""


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
class Controller:
    """Every call in progress, driven by events.

    :param local: the addresses we advertise (Contact, From host, Call-ID host, Via).
    :param timers: SIP timer values (T1, T2) for repeating our 2xx until the caller's ACK.
    :param media: the media anchor (None: recording is not available).
    :param target_timeout: seconds a target may stay silent (not even 100 Trying) before the
        branch's next target is tried.
    """

    local: LocalAddresses
    timers: Timers
    media: MediaPort | None = None
    target_timeout: float = 5.0
    calls: dict[str, Call] = field(default_factory=dict)
    """Calls in progress by their caller's INVITE transaction."""
    _by_id: dict[uuid.UUID, Call] = field(default_factory=dict)
    _refs: dict[int, tuple[Call, Branch | Relay | Abandoned]] = field(default_factory=dict)
    _connected: dict[DialogId, tuple[Call, bool]] = field(default_factory=dict)
    """Every connected leg by its dialog id, with whether it is the caller's."""
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _out: list[Action] = field(default_factory=list)
    _now: float = 0.0
    _at: datetime | None = None

    # -- questions the adapter asks before handing an event over --------------------------------

    def call(self, call_id: uuid.UUID) -> Call | None:
        return self._by_id.get(call_id)

    def leg_of(self, request: Request) -> tuple[Call, bool] | None:
        """The call and leg (True: the caller's) an in-dialog request belongs to."""
        return self._connected.get((request.call_id, request.to.tag or "", request.from_.tag or ""))

    def routing(self, tid: str) -> bool:
        """Whether the caller's INVITE ``tid`` is still being routed (a CANCEL applies)."""
        call = self.calls.get(tid)
        return call is not None and call.state is CallState.ROUTING

    def waits_for(self, ref: int) -> bool:
        return ref in self._refs

    def owns_response(self, response: Response) -> bool:
        """Whether a response outside any transaction is a destination's on one of our calls."""
        found = self._connected.get(
            (response.call_id, response.from_.tag or "", response.to.tag or "")
        )
        return found is not None and not found[1]

    # -- the one entry point -------------------------------------------------------------------

    def handle(self, event: ControllerEvent, now: float, at: datetime) -> list[Action]:
        """Take one event; return what to do, in order."""
        self._now, self._at, self._out = now, at, []
        match event:
            case CallArrived():
                self._arrived(event.call, event.dialplan_found)
            case Resolved():
                self._resolved(event)
            case Responded():
                self._responded(event.ref, event.response)
            case TimedOut():
                self._timed_out(event.ref)
            case StrayResponse():
                self._stray(event.response)
            case CallerCancelled():
                self._caller_cancelled(event.tid)
            case InDialogRequest():
                self._in_dialog(event.tid, event.request)
            case AckArrived():
                self._ack_arrived(event.request)
            case TimerFired():
                self._timer_fired(event.key)
            case MediaBound():
                self._media_bound(event.call, event.failure)
            case PromptPlayed():
                self._prompt_played(event.call)
            case MediaRefused():
                self._media_refused(event.call, event.reason)
            case MediaStopped():
                self._media_stopped(event.call, event.reason)
            case ServerStopping():
                self._stop_all()
        out, self._out = self._out, []
        return out

    # -- emitting ------------------------------------------------------------------------------

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
        self, request: Request, flow: Flow, target: tuple[Call, Branch | Relay] | None
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
        self._emit(Notify(call.number.client_id, event, webhook_data(call)))

    def _contact(self, flow: Flow) -> str:
        return contact_uri(flow, self.local.sent_by(flow))

    def _anchored(self, call: Call) -> bool:
        return call.anchored and self.media is not None and str(call.id) in self.media

    # -- a new call and its dialplan -----------------------------------------------------------

    def _arrived(self, call: Call, dialplan_found: bool) -> None:
        call.arrived = self._now
        self.calls[call.tid] = call
        self._by_id[call.id] = call
        number = call.number
        self._notify(call, "call.started")
        self._record(
            CallStarted(
                call_id=call.id,
                client_id=number.client_id,
                number_id=number.id,
                tracking_number=number.e164,
                caller_number=call.caller_number,
                sip_call_id=call.request.call_id,
                trunk=call.trunk.name if call.trunk is not None else None,
                dialplan=number.dialplan,
                session_id=call.session_id,
                attribution=call.attribution,
                record=number.record,
                at=self._wall,
            )
        )
        if not dialplan_found:
            log.warning("call %s: dialplan %r does not exist", call.id, number.dialplan)
            self._fail(call, 480, "rejected", f"no dialplan {number.dialplan!r}")
            return
        self._next_step(call)

    def _next_step(self, call: Call) -> None:
        while call.steps:
            action = call.steps.pop(0).action
            if isinstance(action, SetRecording):
                call.record = action.record
            elif isinstance(action, SetDuration):
                call.max_duration = action.seconds
            elif isinstance(action, Announce):
                if self._announce(call, action.prompt):
                    return  # the next step runs when the prompt has been played
            elif isinstance(action, Reject):
                self._fail(call, action.status, "rejected", action.reason or "dialplan reject")
                return
            elif isinstance(action, Dial):
                targets, _missing = action.targets(call.params)
                if not targets:
                    continue  # the parameters this step needs are not set: it does not apply
                call.continue_on = action.continue_on
                self._dial(call, targets, action.ring_timeout)
                return
        outcome = call.outcomes[-1] if call.outcomes else "rejected"
        status = FINAL_STATUS[outcome] if call.outcomes else 480
        self._fail(call, status, outcome, "no destination answered" if call.outcomes else "no step")

    def _dial(self, call: Call, targets: list[str], ring_timeout: float) -> None:
        if call.record and call.callee_offer is None:
            self._anchor(call)
        call.branches = []
        for destination in targets:
            call.attempts += 1
            branch = Branch(call.attempts, destination)
            call.branches.append(branch)
            self._record(AttemptStarted(call.id, branch.seq, destination, self._wall))
            self._emit(Resolve(call.id, branch.seq, destination))
        self._start_timer(call, "ring", ring_timeout)

    def _resolved(self, event: Resolved) -> None:
        call = self._by_id.get(event.call)
        if call is None:
            return
        if event.media_failure is not None:
            self._unanchor(call, event.media_failure)
        branch = next((b for b in call.branches if b.seq == event.seq), None)
        if branch is None or call.state is not CallState.ROUTING or branch.state.done:
            return
        if event.uri is None or not event.flows:
            reason = f"cannot reach {branch.destination}"
            self._branch_failed(call, branch, None, "error", reason)
            return
        branch.uri, branch.trunk, branch.targets = event.uri, event.trunk, list(event.flows)
        self._send_branch(call, branch, BranchInput.SENT)

    def _send_branch(self, call: Call, branch: Branch, why: BranchInput) -> None:
        """Send the branch's INVITE to its next RFC 3263 target, in a new transaction."""
        assert branch.uri is not None
        if branch.ref is not None and branch.ref in self._refs:
            if branch.final or branch.request is None or branch.flow is None:
                self._forget(call, branch.ref)
            else:
                # A silent target: its transaction runs on (§9.1: no CANCEL before a
                # provisional response), so a late answer is still heard and settled.
                self._refs[branch.ref] = (call, Abandoned(branch.request, branch.flow))
        flow = branch.flow = branch.targets.pop(0)
        branch.request = outbound_invite(
            call.request,
            branch.uri,
            host=self.local.local_host(flow),
            contact=self._contact(flow),
            presented_number=call.presented_number,
            trunk=branch.trunk,
            body=call.callee_offer or call.request.body,
        )
        branch.state = next_branch_state(branch.state, why)
        branch.final = False
        branch.ref = self._send(branch.request, flow, (call, branch))
        if branch.targets:
            self._start_timer(call, "target", self.target_timeout, branch.ref)

    def _next_target(self, call: Call, branch: Branch) -> bool:
        """RFC 3263 §4.3: after a 503, a timeout or silence, the same request goes to the next
        target in a new transaction. False when there is none (or it is too late)."""
        can = (branch.state, BranchInput.FAILOVER) in BRANCH_TRANSITIONS
        if not branch.targets or not can or call.state is not CallState.ROUTING:
            return False
        if branch.ref is not None:
            self._stop_timer(call, "target", branch.ref)
        if branch.flow is not None:
            branch.skipped.append(f"{branch.flow.host}:{branch.flow.port}")
        log.info("call %s: %s failed, trying its next target", call.id, branch.skipped[-1:])
        self._send_branch(call, branch, BranchInput.FAILOVER)
        return True

    # -- announcements and media ---------------------------------------------------------------

    def _announce(self, call: Call, prompt: str) -> bool:
        """Play ``prompt`` to the caller as early media (183 with our SDP) before dialling,
        once the worker has bound the call's ports. False when it cannot be played: the call is
        not recorded, so its media does not pass through the worker."""
        if call.record and call.callee_offer is None:
            self._anchor(call)
        if not call.record or not self._anchored(call):
            return False
        call.prompt = prompt
        self._emit(AwaitMedia(call.id))
        return True

    def _media_bound(self, call_id: uuid.UUID, failure: str | None) -> None:
        """The worker has bound the call's ports (or could not): play, or go on without."""
        call = self._by_id.get(call_id)
        if call is None or call.state is not CallState.ROUTING or call.prompt is None:
            return
        prompt, call.prompt = call.prompt, None
        if failure is not None:
            self._unanchor(call, failure)
        if self.media is None or not self._anchored(call):
            self._next_step(call)  # unheard: the prompt's media would not reach the caller
            return
        sdp, codec = self.media.early_answer(str(call.id))
        progress = call.request.response(183, to_tag=call.local_tag)
        progress.headers.add("Contact", f"<{self._contact(call.flow)}>")
        progress.headers.add("Content-Type", "application/sdp")
        progress.body = sdp
        self._emit(Respond(call.tid, progress))
        self._emit(PlayPrompt(call.id, prompt, codec))

    def _prompt_played(self, call_id: uuid.UUID) -> None:
        call = self._by_id.get(call_id)
        if call is not None and call.state is CallState.ROUTING:
            self._next_step(call)

    def _anchor(self, call: Call) -> None:
        """A recorded call's media goes through the worker; when it cannot, the call is
        connected unrecorded and its record says why."""
        reason: str | None = "recording is not available (no media worker)"
        if call.record_refusal is not None:
            reason = call.record_refusal
        elif self.media is not None:
            nat = call.trunk.nat if call.trunk is not None else False
            call.callee_offer, reason = self.media.offer(str(call.id), call.request.body, nat=nat)
            call.anchored = reason is None
        if reason is not None:
            call.record = False
            self._record(RecordingRefused(call.id, reason))
            log.info("call %s: not recorded: %s", call.id, reason)

    def _unanchor(self, call: Call, reason: str) -> None:
        """The worker could not bind the call's ports: its SDP passes through untouched and it
        is connected unrecorded, its record saying why (never dead air on unbound ports)."""
        if not self._anchored(call):
            return  # another branch of this call got there first
        call.anchored = False
        self._emit(MediaCommand(call.id, "withdraw"))
        call.callee_offer = None
        if call.record:
            call.record = False
            self._record(RecordingRefused(call.id, reason))
        log.warning("call %s: not recorded: %s", call.id, reason)

    def _for_caller(self, call: Call, body: bytes) -> bytes:
        """SDP from the destination as the caller must see it."""
        if self.media is not None and body and self._anchored(call):
            return self.media.towards_caller(str(call.id), body)
        return body

    def _for_callee(self, call: Call, body: bytes) -> bytes:
        """SDP from the caller as the destination must see it."""
        if self.media is not None and body and self._anchored(call):
            return self.media.towards_callee(str(call.id), body)
        return body

    def _media_refused(self, call_id: uuid.UUID, reason: str) -> None:
        call = self._by_id.get(call_id)
        if call is not None and call.record:
            call.record = False
            self._record(RecordingRefused(call.id, reason))

    def _media_stopped(self, call_id: uuid.UUID, reason: str) -> None:
        call = self._by_id.get(call_id)
        if call is None:
            return
        if call.state is CallState.ANSWERED:
            self._hang_up(call, reason)
        else:
            self._cancel_branches(call)
            self._fail(call, 500, "error", reason)

    # -- outbound leg events -------------------------------------------------------------------

    def _responded(self, ref: int, response: Response) -> None:
        found = self._refs.get(ref)
        if found is None:
            return
        call, target = found
        if isinstance(target, Relay):
            if response.status >= 200:
                self._forget(call, ref)
            self._relay_answer(target, response)
            return
        if isinstance(target, Abandoned):
            self._late_answer(call, ref, target, response)
            return
        branch, status = target, response.status
        self._stop_timer(call, "target", ref)
        if status >= 200:
            branch.final = True
        if status == 503 and self._next_target(call, branch):
            pass
        elif status < 200:
            self._provisional(call, branch, ref, response)
        elif status < 300:
            self._answered(call, branch, response)
        else:
            self._branch_failed(call, branch, status, classify(status), response.reason)
        if status >= 200 and call.state is CallState.ENDED:
            self._forget(call, ref)

    def _late_answer(self, call: Call, ref: int, abandoned: Abandoned, response: Response) -> None:
        """An answer on the INVITE of a target given up for silence: CANCEL it once it rings;
        a 2xx is ACKed and hung up (the branch went on elsewhere)."""
        status = response.status
        if 100 < status < 200 and not abandoned.cancelled:
            abandoned.cancelled = True
            self._emit(CancelRequest(ref))
        elif 200 <= status < 300:
            contact = self._contact(abandoned.flow)
            dialog = Dialog.as_uac(abandoned.request, response, contact)
            flow = dialog_flow(dialog, abandoned.flow)
            cseq = abandoned.request.cseq.number
            self._emit(
                SendStateless(ack_request(dialog, cseq, flow, self.local.sent_by(flow)), flow)
            )
            self._bye(call, dialog, abandoned.flow)
            self._forget(call, ref)
        elif status >= 300:
            self._forget(call, ref)

    def _timed_out(self, ref: int) -> None:
        found = self._refs.get(ref)
        if found is None:
            return
        call, target = found
        self._forget(call, ref)
        if isinstance(target, Relay):
            self._emit(Respond(target.incoming_tid, target.incoming.response(408)))
            return
        if isinstance(target, Abandoned):
            return
        target.final = True
        if not self._next_target(call, target):
            self._branch_failed(call, target, 408, "error", "no answer from the destination")

    def _provisional(self, call: Call, branch: Branch, ref: int, response: Response) -> None:
        if response.status == 100:
            branch.state = next_branch_state(branch.state, BranchInput.TRYING)
            return
        if branch.state is BranchState.CANCEL_OWED:
            # §9.1: the CANCEL waited for a provisional response; this is the first.
            branch.state = next_branch_state(branch.state, BranchInput.PROVISIONAL)
            self._emit(CancelRequest(ref))
            return
        if call.state is not CallState.ROUTING or branch.state.done:
            return
        self._dialled(call)
        if branch.state is not BranchState.RINGING:
            self._record(AttemptRinging(call.id, branch.seq, self._wall))
        branch.state = next_branch_state(branch.state, BranchInput.PROVISIONAL)
        relayed = 183 if response.body else 180
        if not call.ringing or response.body:
            answer = call.request.response(relayed, to_tag=call.local_tag)
            answer.headers.add("Contact", f"<{self._contact(call.flow)}>")
            if response.body:
                answer.headers.add("Content-Type", "application/sdp")
                answer.body = self._for_caller(call, response.body)
            self._emit(Respond(call.tid, answer))
        if not call.ringing:
            call.ringing = True
            self._record(CallRinging(call.id, self._wall))

    def _answered(self, call: Call, branch: Branch, response: Response) -> None:
        assert branch.request is not None and branch.flow is not None
        if branch.dialog is not None and response.to.tag == branch.dialog.remote_tag:
            self._ack(branch, branch.dialog)  # the 2xx again: our ACK was lost
            return
        dialog = Dialog.as_uac(branch.request, response, self._contact(branch.flow))
        dialog.confirmed = True
        self._ack(branch, dialog)
        if call.state is not CallState.ROUTING or branch.state.done:
            # A second 2xx from a forked or cancelled branch: ACK it, then hang it up (§13.2.2.4).
            if branch is not call.callee:
                branch.dialog = dialog  # so that its repetitions are ACKed again
            branch.state = next_branch_state(branch.state, BranchInput.SUCCESS)
            self._bye(call, dialog, branch.flow)
            return
        branch.dialog = dialog
        branch.state = next_branch_state(branch.state, BranchInput.SUCCESS)
        self._dialled(call)
        call.state = next_call_state(call.state, CallInput.BRANCH_ANSWERED)
        call.callee = branch
        self._connected[dialog.id] = (call, False)
        self._stop_timer(call, "ring")
        self._cancel_branches(call)
        self._record(AttemptAnswered(call.id, branch.seq, self._wall))
        ok = call.request.response(200, to_tag=call.local_tag)
        ok.headers.add("Contact", f"<{self._contact(call.flow)}>")
        if response.body:
            ok.headers.add(
                "Content-Type", response.headers.get("content-type") or "application/sdp"
            )
            ok.body = self._for_caller(call, response.body)
        if call.record and self._anchored(call):
            self._emit(MediaCommand(call.id, "record"))
        call.caller = Dialog.as_uas(call.request, call.local_tag, self._contact(call.flow))
        call.caller.confirmed = True
        self._connected[call.caller.id] = (call, True)
        self._emit(Respond(call.tid, ok))
        call.repeater = AnswerRepeater(ok, self.timers, self._now)
        self._repeat_answer(call)
        self._record(CallAnswered(call.id, self._wall))
        self._notify(call, "call.answered")
        if call.max_duration is not None:
            self._start_timer(call, "duration", call.max_duration)

    def _ack(self, branch: Branch, dialog: Dialog) -> None:
        assert branch.request is not None and branch.flow is not None
        flow = dialog_flow(dialog, branch.flow)
        ack = ack_request(dialog, branch.request.cseq.number, flow, self.local.sent_by(flow))
        self._emit(SendStateless(ack, flow))

    def _stray(self, response: Response) -> None:
        found = self._connected.get(
            (response.call_id, response.from_.tag or "", response.to.tag or "")
        )
        if found is None or found[1]:
            return
        callee = found[0].callee
        if callee is not None and callee.dialog is not None and response.cseq.method == "INVITE":
            self._ack(callee, callee.dialog)

    def _branch_failed(
        self, call: Call, branch: Branch, status: int | None, outcome: str, reason: str
    ) -> None:
        if branch.state.done:
            if branch.state is BranchState.CANCEL_OWED:
                branch.state = next_branch_state(branch.state, BranchInput.FAILURE)
            return
        branch.state = next_branch_state(branch.state, BranchInput.FAILURE)
        routing = call.state is CallState.ROUTING
        branch.outcome = "cancelled" if not routing or status == 487 else outcome
        if branch.ref is not None:
            self._stop_timer(call, "target", branch.ref)
        if branch.skipped:
            reason += f" (also tried {', '.join(branch.skipped)})"
        self._record(AttemptEnded(call.id, branch.seq, branch.outcome, status, reason, self._wall))
        if not routing:
            return
        call.outcomes.append(outcome)
        call.last_status = status
        if all(b.state.done for b in call.branches):
            self._step_failed(call)

    def _step_failed(self, call: Call) -> None:
        self._stop_timer(call, "ring")
        outcomes = call.outcomes
        worst = next(
            (o for o in ("busy", "no_answer", "error", "rejected") if o in outcomes), "error"
        )
        if worst in call.continue_on:
            self._next_step(call)
            return
        status = (
            call.last_status if call.last_status and worst == "rejected" else FINAL_STATUS[worst]
        )
        self._fail(call, status, worst, "destination refused the call")

    def _ring_timeout(self, call: Call) -> None:
        if call.state is not CallState.ROUTING:
            return
        for branch in call.branches:
            if branch.state.done:
                continue
            self._cancel_branch(call, branch)
            branch.outcome = "no_answer"
            self._record(
                AttemptEnded(call.id, branch.seq, "no_answer", None, "ring timeout", self._wall)
            )
        call.outcomes.append("no_answer")
        self._step_failed(call)

    def _cancel_branches(self, call: Call) -> None:
        for branch in call.branches:
            if not branch.state.done:
                self._cancel_branch(call, branch)
                branch.outcome = "cancelled"
                self._record(
                    AttemptEnded(call.id, branch.seq, "cancelled", None, "call ended", self._wall)
                )

    def _cancel_branch(self, call: Call, branch: Branch) -> None:
        """Give the branch up: CANCEL it now if it rings, with its first provisional response
        if it has none yet (§9.1), never if its INVITE has not left (still resolving)."""
        if branch.ref is not None:
            self._stop_timer(call, "target", branch.ref)
        ringing = branch.state is BranchState.RINGING
        branch.state = next_branch_state(branch.state, BranchInput.CANCEL)
        if ringing and branch.ref is not None:
            self._emit(CancelRequest(branch.ref))

    # -- the caller's leg ----------------------------------------------------------------------

    def _caller_cancelled(self, tid: str) -> None:
        call = self.calls.get(tid)
        if call is None or call.state is not CallState.ROUTING:
            return
        self._cancel_branches(call)
        self._answer_caller(call, 487)
        self._end(call, "cancelled", "caller", "CANCEL")

    def _ack_arrived(self, request: Request) -> None:
        found = self.leg_of(request)
        if found is None:
            return
        call, from_caller = found
        if from_caller and call.repeater is not None:
            call.repeater.ack()
            call.repeater = None
            self._stop_timer(call, "answer")

    # -- connected calls -----------------------------------------------------------------------

    def _in_dialog(self, tid: str, request: Request) -> None:
        """BYE, re-INVITE, UPDATE, INFO on one leg: answered, or relayed to the other leg."""
        found = self.leg_of(request)
        if found is None:
            return
        call, from_caller = found
        callee = call.callee.dialog if call.callee else None
        own, other = (call.caller, callee) if from_caller else (callee, call.caller)
        if own is None or other is None:
            self._emit(Respond(tid, request.response(481)))
            return
        refusal = own.check(request)
        if refusal is not None:
            self._emit(Respond(tid, refusal))
            return
        other_flow = self._leg_flow(call, to_caller=not from_caller)
        if request.method == "BYE":
            self._emit(Respond(tid, own.answer(request, 200)))
            self._bye(call, other, other_flow)
            self._end(call, "answered", "caller" if from_caller else "callee", "BYE")
            return
        # re-INVITE (hold, codec change), UPDATE, INFO: the same request on the other leg.
        body = (
            self._for_callee(call, request.body)
            if from_caller
            else self._for_caller(call, request.body)
        )
        relayed = other.request(request.method, body)
        if request.body:
            relayed.headers.set("Content-Type", request.headers.get("content-type") or "")
        relay = Relay(call, tid, request, not from_caller)
        self._send(relayed, self._dialog_flow(call, other, other_flow), (call, relay))

    def _leg_flow(self, call: Call, *, to_caller: bool) -> Flow:
        """Where the leg's dialog started: the caller's source, or the callee's target."""
        if to_caller:
            return call.flow
        assert call.callee is not None and call.callee.flow is not None
        return call.callee.flow

    def _dialog_flow(self, call: Call, dialog: Dialog, fallback: Flow) -> Flow:
        nat = dialog is call.caller and call.trunk is not None and call.trunk.nat
        return dialog_flow(dialog, fallback, behind_nat=nat)

    def _relay_answer(self, relay: Relay, response: Response) -> None:
        call = relay.call
        callee = call.callee.dialog if call.callee else None
        # (the leg the request came from, the leg it went to)
        source, target = (callee, call.caller) if relay.towards_caller else (call.caller, callee)
        if source is None or target is None:
            return
        body = response.body
        if body:
            # The answer comes from the leg the request was relayed to.
            body = (
                self._for_callee(call, body)
                if relay.towards_caller
                else self._for_caller(call, body)
            )
        answer = source.answer(relay.incoming, response.status, body)
        answer.reason = response.reason
        self._emit(Respond(relay.incoming_tid, answer))
        if relay.incoming.method == "INVITE" and 200 <= response.status < 300:
            # We are the UAC of the leg that answered: the ACK is ours to send. The side that
            # asked ACKs our 2xx in turn, and that ACK stays on its leg.
            flow = self._dialog_flow(
                call, target, self._leg_flow(call, to_caller=relay.towards_caller)
            )
            ack = ack_request(target, response.cseq.number, flow, self.local.sent_by(flow))
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

    def _timer_fired(self, key: TimerKey) -> None:
        call = self._by_id.get(key.call)
        if call is None or key not in call.timers:
            return
        call.timers.discard(key)
        if key.kind == "ring":
            self._ring_timeout(call)
        elif key.kind == "target":
            found = self._refs.get(key.ref)
            branch = found[1] if found is not None else None
            if (
                isinstance(branch, Branch)
                and branch.ref == key.ref
                and branch.state is BranchState.CALLING
            ):
                # Nothing at all, not even 100 Trying: this target is down. Its transaction is
                # left to time out on its own (§9.1: no CANCEL before a provisional response).
                self._next_target(call, branch)
        elif key.kind == "answer" and call.repeater is not None:
            for response in call.repeater.handle_timer(self._now):
                self._emit(SendStateless(response, call.flow))
            self._repeat_answer(call)
        elif key.kind == "duration":
            self._hang_up(call, "max duration")

    def _hang_up(self, call: Call, reason: str) -> None:
        """End an answered call from our side: BYE to both legs."""
        if call.state is not CallState.ANSWERED:
            return
        self._bye_both(call)
        self._end(call, "answered", "system", reason)

    def _stop_all(self) -> None:
        """The server stops: end every call now, each recorded as ended by shutdown. Answered
        calls get BYE on both legs; calls still being routed are cancelled and their callers
        get 503 (a carrier tries elsewhere)."""
        for call in list(self.calls.values()):
            if call.state is CallState.ANSWERED:
                self._bye_both(call)
                self._end(call, "answered", "system", SHUTDOWN)
            elif call.state is CallState.ROUTING:
                self._cancel_branches(call)
                self._fail(call, 503, "error", SHUTDOWN)

    # -- endings -------------------------------------------------------------------------------

    def _dialled(self, call: Call) -> None:
        """The caller hears ringing or an answer for the first time: the post-dial delay."""
        if not call.ringing:
            self._emit(ObserveDialled(self._now - call.arrived))

    def _answer_caller(self, call: Call, status: int) -> None:
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
