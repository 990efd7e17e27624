"""Dialling in the call controller: the dialplan's steps carried out, each dial step's
destinations rung in parallel (the first 2xx wins, the others are cancelled, a second 2xx is
ACKed and hung up, §13.2.2.4), RFC 3263 failover to a branch's next target after a 503, a
timeout or silence, late answers on given-up transactions settled, and a failed step's
outcome continued to the next step or answered to the caller.
"""

from __future__ import annotations

import logging

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallRinging,
)
from callrouter.routing.actions import CancelRequest, MediaCommand, Resolve, Respond, SendStateless
from callrouter.routing.call import FINAL_STATUS, Abandoned, Branch, Call, Probe, Relay, classify
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
from callrouter.routing.events import Resolved
from callrouter.routing.keepalives import DialogKeepalives
from callrouter.routing.outbound import (
    ack_request,
    allow_towards,
    dialog_flow,
    dialog_response,
    outbound_invite,
)
from callrouter.routing.session_timers import answer_interval, carry_response, refused_interval
from callrouter.sip.dialogs import AnswerRepeater, Dialog
from callrouter.sip.message import Response

__all__ = ["Forking"]

log = logging.getLogger(__name__)


class Forking(DialogKeepalives):
    """The controller's dialling: dialplan steps, parallel branches, failover, cancels."""

    # -- the dialplan's steps ----------------------------------------------------------------------

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

    # -- branches ----------------------------------------------------------------------------------

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
        assert call.request is not None  # only a call being routed sends INVITEs
        branch.request = outbound_invite(
            call.request,
            branch.uri,
            host=self.local.local_host(flow),
            contact=self._contact(flow),
            presented_number=call.presented_number,
            trunk=branch.trunk,
            body=call.callee_offer or call.request.body,
            session_expires=self.session_expires,
            min_se=branch.min_se,
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

    # -- outbound leg events -----------------------------------------------------------------------

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
        if isinstance(target, Probe):
            if response.status >= 200:
                self._forget(call, ref)
                self._probe_answered(call, target, response.status)
            return
        if isinstance(target, Abandoned):
            self._late_answer(call, ref, target, response)
            return
        branch, status = target, response.status
        self._stop_timer(call, "target", ref)
        if status >= 200:
            branch.final = True
        if (status == 503 and self._next_target(call, branch)) or (
            status == 422 and self._ask_longer(call, branch, response)
        ):
            pass  # the same INVITE left again: to the next target, or asking a longer interval
        elif status < 200:
            self._provisional(call, branch, ref, response)
        elif status < 300:
            self._answered(call, branch, response)
        else:
            self._branch_failed(call, branch, status, classify(status), response.reason)
        if status >= 200 and call.state is CallState.ENDED:
            self._forget(call, ref)

    def _ask_longer(self, call: Call, branch: Branch, response: Response) -> bool:
        """RFC 4028 §7.4: a 422 names the smallest session interval the destination takes; the
        INVITE goes again, once, in a new transaction to the same target, asking for that. The
        caller never sees the 422 (it asked for nothing the destination refused: our own
        interval, or the caller's raised on the way, as a proxy may, §8.1)."""
        assert branch.request is not None and branch.flow is not None
        floor = refused_interval(branch.request, response)
        can = (branch.state, BranchInput.FAILOVER) in BRANCH_TRANSITIONS
        if floor is None or branch.min_se is not None or not can:
            return False
        if call.state is not CallState.ROUTING:
            return False
        branch.min_se = floor
        branch.targets.insert(0, branch.flow)
        self._send_branch(call, branch, BranchInput.FAILOVER)
        return True

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
        if isinstance(target, Probe):
            self._probe_answered(call, target, 408)  # Timer F: the peer never answered
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
            assert call.request is not None  # routed, so not ACKed
            answer = dialog_response(call.request, relayed, call.local_tag)
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
        assert call.request is not None  # routed, so not ACKed
        ok = dialog_response(call.request, 200, call.local_tag)
        ok.headers.add("Contact", f"<{self._contact(call.flow)}>")
        ok.headers.add("Allow", allow_towards(response.headers))
        ok.headers.add("Supported", "timer")
        session = answer_interval(branch.request, call.request, response)
        carry_response(response, ok, session)
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
        call.answered = self._now
        self._keep_alive(call, session)
        if call.max_duration is not None:
            self._start_timer(call, "duration", call.max_duration)

    def _stray(self, response: Response) -> None:
        found = self._connected.get(
            (response.call_id, response.from_.tag or "", response.to.tag or "")
        )
        if found is None or found[1]:
            return
        callee = found[0].callee
        if callee is not None and callee.dialog is not None and response.cseq.method == "INVITE":
            self._ack(callee, callee.dialog)
