"""The call controller: the B2BUA's call logic as a sans-IO state machine.

Rules of the controller (this file and the modules it is built from):
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
- The logic is split by job: call_lifecycle.py (the calls held, emitting, endings),
  call_media.py (anchored SDP, prompts), in_dialog.py (connected calls), keepalives.py (OPTIONS
  that find a dead leg of a call without a session timer), forking.py (dialplan steps, parallel
  branches, failover); this file is the entry point and dispatch.
- Every change of state is reported to the call journal as it happens (``Record``), so the
  call record is true even if the process dies a moment later; nothing here waits for it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from callrouter.call_events import CallStarted
from callrouter.routing.actions import Action, PlayPrompt, Respond, SendStateless
from callrouter.routing.call import Branch, Call, TimerKey
from callrouter.routing.call_lifecycle import CEILING, SESSION_EXPIRED
from callrouter.routing.call_states import BranchState, CallState
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
from callrouter.routing.forking import Forking
from callrouter.routing.outbound import dialog_response
from callrouter.sip.message import Response

__all__ = ["SHUTDOWN", "Controller"]

log = logging.getLogger(__name__)


SHUTDOWN = "server shutdown"
"""The hang-up reason of calls the server ended because it was stopped."""


class Controller(Forking):
    """Every call in progress, driven by events.

    :param local: the addresses we advertise (Contact, From host, Call-ID host, Via).
    :param timers: SIP timer values (T1, T2) for repeating our 2xx until the caller's ACK.
    :param media: the media anchor (None: recording is not available).
    :param target_timeout: seconds a target may stay silent (not even 100 Trying) before the
        branch's next target is tried.
    :param session_expires: the session interval destinations are asked for when the caller
        asks for none; 0 asks for none.
    :param max_call_seconds: how long an answered call without a session timer may last; 0
        for no limit.
    :param dialog_keepalive_seconds: how often an answered call without a session timer
        sends OPTIONS on both legs (routing/keepalives.py); 0: never.
    """

    # -- questions the adapter asks before handing an event over -----------------------------------

    def call(self, call_id: uuid.UUID) -> Call | None:
        return self._by_id.get(call_id)

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

    # -- the one entry point -----------------------------------------------------------------------

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

    # -- events ------------------------------------------------------------------------------------

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
                sip_call_id=call.sip_call_id,
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

    def _caller_cancelled(self, tid: str) -> None:
        call = self.calls.get(tid)
        if call is None or call.state is not CallState.ROUTING:
            return
        self._cancel_branches(call)
        self._answer_caller(call, 487)
        self._end(call, "cancelled", "caller", "CANCEL")

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
        elif key.kind == "session":
            self._hang_up(call, SESSION_EXPIRED)
        elif key.kind == "ceiling":
            self._hang_up(call, CEILING)
        elif key.kind == "keepalive":
            self._keepalive_due(call)

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
        assert call.request is not None  # routed, so not ACKed
        progress = dialog_response(call.request, 183, call.local_tag)
        progress.headers.add("Contact", f"<{self._contact(call.flow)}>")
        progress.headers.add("Content-Type", "application/sdp")
        progress.body = sdp
        self._emit(Respond(call.tid, progress))
        self._emit(PlayPrompt(call.id, prompt, codec))

    def _prompt_played(self, call_id: uuid.UUID) -> None:
        call = self._by_id.get(call_id)
        if call is not None and call.state is CallState.ROUTING:
            self._next_step(call)

    def _media_stopped(self, call_id: uuid.UUID, reason: str) -> None:
        call = self._by_id.get(call_id)
        if call is None:
            return
        if call.state is CallState.ANSWERED:
            self._hang_up(call, reason)
        else:
            self._cancel_branches(call)
            self._fail(call, 500, "error", reason)

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
