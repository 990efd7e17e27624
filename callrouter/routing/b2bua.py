"""The B2BUA: one inbound leg from the carrier, outbound legs to the client's destinations.

Rules of this file:
- Every call is two (or more) independent dialogs joined here: nothing of one leg's Via,
  Contact, Record-Route or Call-ID reaches the other (topology hiding). Bodies (SDP) pass across
  unchanged; the media worker anchors them when a call is recorded.
- The dialplan decides; this file carries it out: dial steps ring their destinations in parallel
  with a ring timer, the first 2xx wins and the others are cancelled, a failed step continues to
  the next one when its outcome is listed in ``continue_on``, else the caller gets the answer.
- Every change of state is reported to the call journal as it happens, so the call record is
  true even if the process dies a moment later.
- All work happens on the one event loop; timers come from the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    RecordingRefused,
)
from callrouter.metrics import Metrics
from callrouter.privacy.suppression import UNRESTRICTED, CallerTreatment
from callrouter.routing.anchoring import MediaAnchor
from callrouter.routing.call import (
    DISPOSITION,
    FINAL_STATUS,
    Branch,
    Call,
    Journal,
    Relay,
    classify,
    static_attribution,
)
from callrouter.routing.dialplan import Announce, Dial, Reject, SetDuration, SetRecording
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.sessions import Sessions
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.dialogs import AnswerRepeater, Dialog, DialogId
from callrouter.sip.errors import SipError
from callrouter.sip.events import (
    AckReceived,
    CancelReceived,
    Flow,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from callrouter.sip.headers import Headers
from callrouter.sip.message import Request, Response
from callrouter.sip.uri import SipUri, parse_uri
from callrouter.store.ids import new_id
from callrouter.store.numbers import Number
from callrouter.transport.resolver import Resolver
from callrouter.transport.service import SipService
from callrouter.webhooks import WebhookSender

__all__ = ["B2bua", "Call", "Journal", "classify"]

log = logging.getLogger(__name__)

SHUTDOWN = "server shutdown"
"""The hang-up reason of calls the server ended because it was stopped."""


@dataclass(eq=False)
class B2bua:
    """Routes calls for tracking numbers.

    :param service: the SIP transaction layer on real transports.
    :param journal: where call events go (the durable call journal).
    :param dialplans: the dialplans in service.
    :param resolver: RFC 3263 location of destinations.
    :param clock: the reactor: ``seconds()`` and ``callLater()``.
    :param trunks: the carriers; the outbound one takes E.164 destinations.
    """

    service: SipService
    journal: Journal
    dialplans: DialplanLibrary
    resolver: Resolver
    clock: Any
    trunks: TrunkTable
    target_timeout: float = 5.0
    """Seconds a target may stay silent (not even 100 Trying) before the next one is tried."""
    sessions: Sessions | None = None
    """The pools' leases: a call to a pool number is attributed to the visit holding it."""
    webhooks: WebhookSender | None = None
    """Where call.started, call.answered and call.completed go for the client's webhooks."""
    media: MediaAnchor | None = None
    """Anchors recorded calls' RTP on the media worker (None: recording is not available)."""
    privacy: Callable[[uuid.UUID, str | None], CallerTreatment] = field(
        default=lambda _client, _caller: UNRESTRICTED
    )
    """How a caller's call may be treated (the suppression list's ``treatment``)."""
    metrics: Metrics | None = None
    """Counts finished calls and measures post-dial delay."""
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    calls: dict[str, Call] = field(default_factory=dict)
    _by_branch: dict[str, tuple[Call, Branch]] = field(default_factory=dict)
    _relays: dict[str, Relay] = field(default_factory=dict)
    _connected: dict[DialogId, tuple[Call, bool]] = field(default_factory=dict)
    """Every connected leg by its dialog id, with whether it is the caller's."""
    _announcing: set[asyncio.Task[None]] = field(default_factory=set)
    _shutdown_byes: set[str] = field(default_factory=set)
    """The BYE transactions ``shut_down`` started that have no final answer yet."""

    # -- entry points (the front door hands these over) --------------------------------------

    def start(
        self, request: Request, tid: str, flow: Flow, number: Number, *, caller: str, trunk: Trunk
    ) -> None:
        """An INVITE for ``number`` from ``trunk`` passed admission: create the call and run its
        dialplan."""
        plan = self.dialplans.get(number.dialplan)
        params = {k: str(v) for k, v in number.dialplan_params.items()}
        if number.destination:
            params.setdefault("destination", number.destination)
        call = Call(
            id=new_id(),
            number=number,
            request=request,
            tid=tid,
            flow=flow,
            local_tag=secrets.token_hex(6),
            steps=plan.applicable(self.wall(), caller, params) if plan else [],
            params=params,
            record=number.record,
            trunk=trunk,
            arrived=self.clock.seconds(),
        )
        self.calls[tid] = call
        treatment = self.privacy(number.client_id, caller or None)
        call.presented_number = caller or None
        if treatment.suppressed:
            # The caller objected: connected, but not attributed, not recorded, and their
            # number is kept nowhere (record, webhooks, logs).
            call.attribution = {}
            call.record_refusal = "the caller objected to processing (suppression list)"
        else:
            visit = self.sessions.attribute(number.e164) if self.sessions is not None else None
            call.session_id = visit.session_id if visit else None
            call.attribution = visit.facts if visit else static_attribution(number)
            call.caller_number = caller or None
            if not treatment.record_allowed:
                call.record_refusal = "the caller withdrew consent to recording"
        self._notify(call, "call.started")
        self.journal.record(
            CallStarted(
                call_id=call.id,
                client_id=number.client_id,
                number_id=number.id,
                tracking_number=number.e164,
                caller_number=call.caller_number,
                sip_call_id=request.call_id,
                trunk=trunk.name,
                dialplan=number.dialplan,
                session_id=call.session_id,
                attribution=call.attribution,
                record=number.record,
                at=self.wall(),
            )
        )
        if plan is None:
            log.warning("call %s: dialplan %r does not exist", call.id, number.dialplan)
            self._fail(call, 480, "rejected", f"no dialplan {number.dialplan!r}")
            return
        self._next_step(call)

    def cancelled(self, event: CancelReceived) -> bool:
        call = self.calls.get(event.invite_transaction_id)
        if call is None or call.state != "routing":
            return False
        self._cancel_branches(call)
        self._answer_caller(call, 487)
        self._end(call, "cancelled", "caller", "CANCEL")
        return True

    def response(self, event: ResponseReceived) -> bool:
        tid = event.transaction_id
        if tid is None:
            return self._stray_2xx(event.response, event.flow)
        if tid in self._shutdown_byes:
            if event.response.status >= 200:
                self._shutdown_byes.discard(tid)
            return True
        if tid in self._relays:
            self._relay_answer(
                self._relays.pop(tid) if event.response.status >= 200 else self._relays[tid],
                event.response,
            )
            return True
        found = self._by_branch.get(tid)
        if found is None:
            return False
        call, branch = found
        status = event.response.status
        branch.answered_at_all = True
        self._stop_target_timer(branch)
        if status == 503 and self._next_target(call, branch):
            return True
        if status < 200:
            self._provisional(call, branch, event.response)
        elif status < 300:
            self._answered(call, branch, event.response)
        else:
            self._branch_failed(call, branch, status, classify(status), event.response.reason)
        return True

    def timed_out(self, event: TransactionTimedOut) -> bool:
        if event.transaction_id in self._shutdown_byes:
            self._shutdown_byes.discard(event.transaction_id)
            return True
        found = self._by_branch.get(event.transaction_id)
        if found is not None:
            call, branch = found
            if not self._next_target(call, branch):
                self._branch_failed(call, branch, 408, "error", "no answer from the destination")
            return True
        relay = self._relays.pop(event.transaction_id, None)
        if relay is not None:
            self.service.respond(relay.incoming_tid, relay.incoming.response(408))
            return True
        return False

    def in_dialog(self, event: RequestReceived) -> bool:
        """A request with a To tag: BYE, re-INVITE, UPDATE, INFO for one of our calls."""
        found = self._leg_of(event.request)
        if found is None:
            return False
        call, from_caller = found
        self._from_leg(call, event, from_caller=from_caller)
        return True

    def holds_dialog(self, request: Request) -> bool:
        """Whether a request with a To tag belongs to one of our calls (the source policy asks,
        so that a stranger cannot pass for a destination by inventing a tag)."""
        return self._leg_of(request) is not None

    def ack(self, event: AckReceived) -> bool:
        found = self._leg_of(event.request)
        if found is None:
            return False
        call, from_caller = found
        if from_caller and call.repeater is not None:
            call.repeater.ack()
            call.repeater = None
        return True

    def _leg_of(self, request: Request) -> tuple[Call, bool] | None:
        """The call and leg (True: the caller's) an in-dialog request belongs to."""
        return self._connected.get((request.call_id, request.to.tag or "", request.from_.tag or ""))

    # -- the dialplan --------------------------------------------------------------------------

    def _next_step(self, call: Call) -> None:
        while call.steps:
            step = call.steps.pop(0)
            action = step.action
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
        call.branches = {}
        for destination in targets:
            call.attempts += 1
            branch = Branch(call.attempts, destination)
            self.journal.record(AttemptStarted(call.id, branch.seq, destination, self.wall()))
            asyncio.get_running_loop().create_task(self._launch(call, branch))
            call.branches[f"pending-{branch.seq}"] = branch
        call.ring_timer = self.clock.callLater(ring_timeout, self._ring_timeout, call)

    async def _launch(self, call: Call, branch: Branch) -> None:
        uri, trunk = self._destination_uri(branch.destination)
        flows = await self.resolver.locate(uri) if uri is not None else []
        key = str(call.id)
        if self.media is not None and key in self.media:
            # Our SDP may only leave once the worker has bound the ports it names.
            failure = await self.media.bound(key)
            if failure is not None:
                self._unanchor(call, failure)
        if call.state != "routing" or branch.done:
            return
        if uri is None or not flows:
            self._branch_failed(call, branch, None, "error", f"cannot reach {branch.destination}")
            return
        branch.uri, branch.trunk, branch.targets = uri, trunk, flows
        self._send_branch(call, branch)

    def _send_branch(self, call: Call, branch: Branch) -> None:
        """Send the branch's INVITE to its next RFC 3263 target."""
        assert branch.uri is not None
        branch.flow = branch.targets.pop(0)
        branch.request = self._outbound_invite(call, branch.uri, branch.flow, branch.trunk)
        tid = self.service.send_request(branch.request, branch.flow)
        if branch.tid is not None:
            self._by_branch.pop(branch.tid, None)
            call.branches.pop(branch.tid, None)
        branch.tid = tid
        branch.answered_at_all = False
        call.branches.pop(f"pending-{branch.seq}", None)
        call.branches[tid] = branch
        self._by_branch[tid] = (call, branch)
        call.tids.add(tid)
        if branch.targets:
            branch.target_timer = self.clock.callLater(
                self.target_timeout, self._target_silent, call, branch, tid
            )

    def _next_target(self, call: Call, branch: Branch) -> bool:
        """RFC 3263 §4.3: after a 503, a timeout or silence, the same request goes to the next
        target in a new transaction. False when there is none (or it is too late)."""
        if not branch.targets or branch.done or branch.ringing or call.state != "routing":
            return False
        self._stop_target_timer(branch)
        if branch.flow is not None:
            branch.skipped.append(f"{branch.flow.host}:{branch.flow.port}")
        log.info("call %s: %s failed, trying its next target", call.id, branch.skipped[-1:])
        self._send_branch(call, branch)
        return True

    def _target_silent(self, call: Call, branch: Branch, tid: str) -> None:
        branch.target_timer = None
        if branch.tid == tid and not branch.answered_at_all:
            # Nothing at all, not even 100 Trying: this target is down. Its transaction is left
            # to time out on its own (§9.1: no CANCEL before a provisional response).
            self._next_target(call, branch)

    def _stop_target_timer(self, branch: Branch) -> None:
        if branch.target_timer is not None and branch.target_timer.active():
            branch.target_timer.cancel()
        branch.target_timer = None

    def _destination_uri(self, destination: str) -> tuple[SipUri | None, Trunk | None]:
        """Where a destination is sent: E.164 numbers through the outbound trunk."""
        if destination.startswith("+"):
            trunk = self.trunks.outbound()
            if trunk is None or trunk.uri is None:
                return None, None
            try:
                gateway = parse_uri(trunk.uri)
            except SipError:
                return None, trunk
            if not isinstance(gateway, SipUri):
                return None, trunk
            return SipUri(
                gateway.host, destination, None, gateway.port, dict(gateway.params)
            ), trunk
        try:
            uri = parse_uri(destination)
        except SipError:
            return None, None
        return (uri if isinstance(uri, SipUri) else None), None

    def _announce(self, call: Call, prompt: str) -> bool:
        """Play ``prompt`` to the caller as early media (183 with our SDP) before dialling,
        once the worker has bound the call's ports. False when it cannot be played: the call is
        not recorded, so its media does not pass through the worker."""
        if call.record and call.callee_offer is None:
            self._anchor(call)
        key = str(call.id)
        if self.media is None or not call.record or key not in self.media:
            return False
        self.media.bound(key).add_done_callback(
            lambda bound: self._play_announcement(call, prompt, bound.result())
        )
        return True

    def _play_announcement(self, call: Call, prompt: str, failure: str | None) -> None:
        """The worker has bound the call's ports (or could not): play, or go on without."""
        if call.state != "routing":
            return
        key = str(call.id)
        if self.media is None or failure is not None or key not in self.media:
            if failure is not None:
                self._unanchor(call, failure)
            self._next_step(call)  # unheard: the prompt's media would not reach the caller
            return
        sdp, codec = self.media.early_answer(key)
        progress = _dialog_response(call.request, 183, call.local_tag)
        progress.headers.add("Contact", f"<{self._contact(call.flow)}>")
        progress.headers.add("Content-Type", "application/sdp")
        progress.body = sdp
        self.service.respond(call.tid, progress)

        def played(future: asyncio.Future[dict[str, Any]]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.warning("call %s: announcement not played: %s", call.id, future.exception())
            if call.state == "routing":
                self._next_step(call)

        self.media.play(key, prompt, codec).add_done_callback(played)

    def _anchor(self, call: Call) -> None:
        """A recorded call's media goes through the worker; when it cannot, the call is
        connected unrecorded and its record says why."""
        reason: str | None = "recording is not available (no media worker)"
        if call.record_refusal is not None:
            reason = call.record_refusal
        elif self.media is not None:
            nat = call.trunk.nat if call.trunk is not None else False
            call.callee_offer, reason = self.media.offer(str(call.id), call.request.body, nat=nat)
        if reason is not None:
            call.record = False
            self.journal.record(RecordingRefused(call.id, reason))
            log.info("call %s: not recorded: %s", call.id, reason)

    def _unanchor(self, call: Call, reason: str) -> None:
        """The worker could not bind the call's ports: its SDP passes through untouched and it
        is connected unrecorded, its record saying why (never dead air on unbound ports)."""
        key = str(call.id)
        if self.media is None or key not in self.media:
            return  # another branch of this call got there first
        self.media.withdraw(key)
        call.callee_offer = None
        if call.record:
            call.record = False
            self.journal.record(RecordingRefused(call.id, reason))
        log.warning("call %s: not recorded: %s", call.id, reason)

    def _for_caller(self, call: Call, body: bytes) -> bytes:
        """SDP from the destination as the caller must see it."""
        if self.media is not None and body and str(call.id) in self.media:
            return self.media.towards_caller(str(call.id), body)
        return body

    def _for_callee(self, call: Call, body: bytes) -> bytes:
        """SDP from the caller as the destination must see it."""
        if self.media is not None and body and str(call.id) in self.media:
            return self.media.towards_callee(str(call.id), body)
        return body

    def _contact(self, flow: Flow) -> str:
        sent_by = self.service.sent_by(flow)
        suffix = "" if flow.transport == "udp" else f";transport={flow.transport}"
        return f"sip:callrouter@{sent_by}{suffix}"

    def _outbound_invite(self, call: Call, uri: SipUri, flow: Flow, trunk: Trunk | None) -> Request:
        host = self.service.local_host(flow)
        headers = Headers()
        forwards = call.request.max_forwards
        headers.add("Max-Forwards", str(max(1, (forwards if forwards is not None else 70) - 1)))
        headers.add(
            "From", f"{self._presented_caller(call, trunk, host)};tag={secrets.token_hex(6)}"
        )
        headers.add("To", f"<{uri}>")
        headers.add("Call-ID", f"{secrets.token_hex(16)}@{host}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<{self._contact(flow)}>")
        headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
        if self._withheld(call, trunk):
            headers.add("Privacy", "id")
        body = call.callee_offer or call.request.body
        if body:
            headers.add(
                "Content-Type", call.request.headers.get("content-type") or "application/sdp"
            )
        return Request("INVITE", str(uri), headers, body)

    @staticmethod
    def _withheld(call: Call, trunk: Trunk | None) -> bool:
        """The caller asked for privacy (RFC 3323) or the trunk withholds every caller ID."""
        asked = "id" in {p.strip().lower() for p in call.request.headers.get_all("privacy")}
        return asked or (trunk is not None and trunk.caller_id == "withhold")

    def _presented_caller(self, call: Call, trunk: Trunk | None, host: str) -> str:
        """The From the destination sees: the caller's number, the trunk's, or nobody's.

        Topology hiding: only the user part and display name cross over, never the carrier's
        host.
        """
        if self._withheld(call, trunk):
            return '"Anonymous" <sip:anonymous@anonymous.invalid>'
        if trunk is not None and trunk.caller_id == "rewrite" and trunk.caller_id_number:
            return f"<sip:{trunk.caller_id_number}@{host}>"
        caller = call.request.from_
        display = f'"{caller.display_name}" ' if caller.display_name else ""
        user = call.presented_number or getattr(caller.uri, "user", None) or "anonymous"
        return f"{display}<sip:{user}@{host}>"

    # -- outbound leg events -------------------------------------------------------------------

    def _provisional(self, call: Call, branch: Branch, response: Response) -> None:
        if response.status == 100 or call.state != "routing":
            return
        if branch.cancel_pending and branch.tid is not None:
            branch.cancel_pending = False
            self.service.cancel(branch.tid)
            return
        self._dialled(call)
        if not branch.ringing:
            branch.ringing = True
            self.journal.record(AttemptRinging(call.id, branch.seq, self.wall()))
        relayed = 183 if response.body else 180
        if not call.ringing or response.body:
            answer = _dialog_response(call.request, relayed, call.local_tag)
            answer.headers.add("Contact", f"<{self._contact(call.flow)}>")
            if response.body:
                answer.headers.add("Content-Type", "application/sdp")
                answer.body = self._for_caller(call, response.body)
            self.service.respond(call.tid, answer)
        if not call.ringing:
            call.ringing = True
            self.journal.record(CallRinging(call.id, self.wall()))

    def _answered(self, call: Call, branch: Branch, response: Response) -> None:
        assert branch.request is not None and branch.flow is not None
        if branch.dialog is not None and response.to.tag == branch.dialog.remote_tag:
            self._send_ack(branch, branch.dialog)  # the 2xx again: our ACK was lost
            return
        dialog = Dialog.as_uac(branch.request, response, self._contact(branch.flow))
        dialog.confirmed = True
        branch.dialog = dialog
        self._send_ack(branch, dialog)
        if call.state != "routing" or branch.done:
            # A second 2xx from a forked or cancelled branch: ACK it, then hang it up (§13.2.2.4).
            self._bye(branch.dialog, branch.flow)
            return
        branch.done = True
        self._dialled(call)
        call.state = "answered"
        call.callee = branch
        self._connected[dialog.id] = (call, False)
        self._stop_ring_timer(call)
        self._cancel_branches(call)
        self.journal.record(AttemptAnswered(call.id, branch.seq, self.wall()))
        ok = _dialog_response(call.request, 200, call.local_tag)
        ok.headers.add("Contact", f"<{self._contact(call.flow)}>")
        if response.body:
            ok.headers.add(
                "Content-Type", response.headers.get("content-type") or "application/sdp"
            )
            ok.body = self._for_caller(call, response.body)
        if call.record and self.media is not None and str(call.id) in self.media:
            self.media.record(str(call.id))
        call.caller = Dialog.as_uas(call.request, call.local_tag, self._contact(call.flow))
        call.caller.confirmed = True
        self._connected[call.caller.id] = (call, True)
        self.service.respond(call.tid, ok)
        call.repeater = AnswerRepeater(ok, self.service.endpoint.timers, self.clock.seconds())
        self._repeat_answer(call)
        self.journal.record(CallAnswered(call.id, self.wall()))
        self._notify(call, "call.answered")
        if call.max_duration is not None:
            call.timers.append(self.clock.callLater(call.max_duration, self._max_duration, call))

    def _send_ack(self, branch: Branch, dialog: Dialog) -> None:
        assert branch.request is not None and branch.flow is not None
        self._ack(dialog, branch.request.cseq.number, self._dialog_flow(dialog, branch.flow))

    def _stray_2xx(self, response: Response, flow: Flow) -> bool:
        found = self._connected.get(
            (response.call_id, response.from_.tag or "", response.to.tag or "")
        )
        if found is None or found[1]:
            return False
        callee = found[0].callee
        if callee is not None and callee.dialog is not None and response.cseq.method == "INVITE":
            self._send_ack(callee, callee.dialog)
        return True

    def _branch_failed(
        self, call: Call, branch: Branch, status: int | None, outcome: str, reason: str
    ) -> None:
        if branch.done:
            return
        branch.done = True
        branch.outcome = (
            "cancelled" if branch.cancel_pending or call.state != "routing" else outcome
        )
        if status == 487:
            branch.outcome = "cancelled"
        self._stop_target_timer(branch)
        if branch.skipped:
            reason += f" (also tried {', '.join(branch.skipped)})"
        self.journal.record(
            AttemptEnded(call.id, branch.seq, branch.outcome, status, reason, self.wall())
        )
        if call.state != "routing":
            return
        call.outcomes.append(outcome)
        call.last_status = status
        if all(b.done for b in call.branches.values()):
            self._step_failed(call)

    def _step_failed(self, call: Call) -> None:
        self._stop_ring_timer(call)
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
        call.ring_timer = None
        if call.state != "routing":
            return
        pending = [b for b in call.branches.values() if not b.done]
        for branch in pending:
            self._cancel_branch(branch)
            branch.done = True
            branch.outcome = "no_answer"
            self.journal.record(
                AttemptEnded(call.id, branch.seq, "no_answer", None, "ring timeout", self.wall())
            )
        call.outcomes.append("no_answer")
        self._step_failed(call)

    def _cancel_branches(self, call: Call) -> None:
        for branch in call.branches.values():
            if not branch.done:
                branch.done = True
                branch.outcome = "cancelled"
                self._cancel_branch(branch)
                self.journal.record(
                    AttemptEnded(call.id, branch.seq, "cancelled", None, "call ended", self.wall())
                )

    def _cancel_branch(self, branch: Branch) -> None:
        self._stop_target_timer(branch)
        if branch.tid is None:
            return  # not sent yet (still resolving): _launch sees ``done`` and sends nothing
        if branch.ringing:
            self.service.cancel(branch.tid)
        else:
            branch.cancel_pending = True  # §9.1: no CANCEL before a provisional response

    # -- connected calls -----------------------------------------------------------------------

    def _from_leg(self, call: Call, event: RequestReceived, *, from_caller: bool) -> None:
        request = event.request
        own = call.caller if from_caller else (call.callee.dialog if call.callee else None)
        other = (call.callee.dialog if call.callee else None) if from_caller else call.caller
        if own is None or other is None:
            self.service.respond(event.transaction_id, request.response(481))
            return
        refusal = own.check(request)
        if refusal is not None:
            self.service.respond(event.transaction_id, refusal)
            return
        if request.method == "BYE":
            self.service.respond(event.transaction_id, own.answer(request, 200))
            self._bye(other, self._other_flow(call, from_caller))
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
        tid = self.service.send_request(
            relayed, self._dialog_flow(other, self._other_flow(call, from_caller))
        )
        self._relays[tid] = Relay(call, event.transaction_id, request, not from_caller)
        call.tids.add(tid)

    def _legs(self, call: Call, to_caller: bool) -> tuple[Dialog | None, Dialog | None, Flow]:
        """(the leg a relayed request came from, the leg it went to, that leg's flow)."""
        callee = call.callee.dialog if call.callee else None
        if to_caller:
            return callee, call.caller, call.flow
        assert call.callee is not None and call.callee.flow is not None
        return call.caller, callee, call.callee.flow

    def _relay_answer(self, relay: Relay, response: Response) -> None:
        source, target, flow = self._legs(relay.call, relay.towards_caller)
        if source is None or target is None:
            return
        body = response.body
        if body:
            # The answer comes from the leg the request was relayed to.
            body = (
                self._for_callee(relay.call, body)
                if relay.towards_caller
                else self._for_caller(relay.call, body)
            )
        answer = source.answer(relay.incoming, response.status, body)
        answer.reason = response.reason
        self.service.respond(relay.incoming_tid, answer)
        if relay.incoming.method == "INVITE" and 200 <= response.status < 300:
            # We are the UAC of the leg that answered: the ACK is ours to send. The side that
            # asked ACKs our 2xx in turn, and that ACK stays on its leg.
            self._ack(target, response.cseq.number, self._dialog_flow(target, flow))

    def _ack(self, dialog: Dialog, cseq: int, flow: Flow) -> None:
        """The ACK for a 2xx: a transaction of its own (§13.2.2.4), so a fresh Via branch."""
        ack = dialog.request("ACK", cseq=cseq)
        sent_by = self.service.sent_by(flow)
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        ack.headers.add(
            "Via", f"SIP/2.0/{flow.transport.upper()} {sent_by};branch={branch}", first=True
        )
        self.service.send_stateless(ack, flow)

    def _other_flow(self, call: Call, from_caller: bool) -> Flow:
        if from_caller:
            assert call.callee is not None and call.callee.flow is not None
            return call.callee.flow
        return call.flow

    def _dialog_flow(self, dialog: Dialog, fallback: Flow) -> Flow:
        """Where in-dialog requests go: the first Route, else the remote target, when it names an
        IP address; else where the dialog's first request went. A caller on a ``nat`` trunk is
        reached where its requests come from: its Contact names an address behind its NAT."""
        found = self._connected.get(dialog.id)
        if found is not None and found[1] and found[0].trunk is not None and found[0].trunk.nat:
            return fallback
        target = (
            dialog.route_set[0].strip("<>").split(";")[0]
            if dialog.route_set
            else dialog.remote_target
        )
        try:
            uri = parse_uri(target)
        except SipError:
            return fallback
        if isinstance(uri, SipUri) and uri.host[:1].isdigit():
            transport = uri.transport or fallback.transport
            return Flow(transport, uri.host, uri.port or 5060)
        return fallback

    def _bye(self, dialog: Dialog | None, flow: Flow | None) -> str | None:
        if dialog is None or flow is None:
            return None
        return self.service.send_request(dialog.request("BYE"), self._dialog_flow(dialog, flow))

    def _repeat_answer(self, call: Call) -> None:
        repeater = call.repeater
        if repeater is None or repeater.deadline is None:
            if repeater is not None and repeater.gave_up and call.state == "answered":
                self._bye(call.caller, call.flow)
                if call.callee is not None:
                    self._bye(call.callee.dialog, call.callee.flow)
                self._end(call, "answered", "system", "no ACK from the caller")
            return

        def fire() -> None:
            for response in repeater.handle_timer(self.clock.seconds()):
                self.service.send_stateless(response, call.flow)
            self._repeat_answer(call)

        call.timers.append(
            self.clock.callLater(max(0.0, repeater.deadline - self.clock.seconds()), fire)
        )

    def _max_duration(self, call: Call) -> None:
        self._hang_up(call, "max duration")

    def _hang_up(self, call: Call, reason: str) -> None:
        """End an answered call from our side: BYE to both legs."""
        if call.state != "answered":
            return
        self._bye(call.caller, call.flow)
        if call.callee is not None:
            self._bye(call.callee.dialog, call.callee.flow)
        self._end(call, "answered", "system", reason)

    # -- shutdown ------------------------------------------------------------------------------

    def shut_down(self) -> int:
        """The server stops: end every call now, each recorded as ended by shutdown. Answered
        calls get BYE on both legs; calls still being routed are cancelled and their callers
        get 503 (a carrier tries elsewhere). Returns how many calls were ended."""
        ended = 0
        for call in list(self.calls.values()):
            if call.state == "answered":
                self._shutdown_byes.update(
                    tid
                    for tid in (
                        self._bye(call.caller, call.flow),
                        self._bye(call.callee.dialog, call.callee.flow) if call.callee else None,
                    )
                    if tid is not None
                )
                self._end(call, "answered", "system", SHUTDOWN)
            elif call.state == "routing":
                self._cancel_branches(call)
                self._fail(call, 503, "error", SHUTDOWN)
            else:
                continue
            ended += 1
        return ended

    @property
    def byes_unanswered(self) -> int:
        """BYEs sent by ``shut_down`` still waiting for their final answer."""
        return len(self._shutdown_byes)

    # -- media worker events --------------------------------------------------------------------

    def _by_key(self, key: str) -> Call | None:
        return next((c for c in self.calls.values() if str(c.id) == key), None)

    def pause_recording(self, call_id: uuid.UUID, paused: bool) -> str | None:
        """Pause or resume a live call's recording (PCI); None when done, else why not."""
        call = self._by_key(str(call_id))
        if call is None or call.state != "answered":
            return "the call is not in progress"
        key = str(call.id)
        if not call.record or self.media is None or key not in self.media:
            return "the call is not being recorded"
        if paused:
            self.media.pause(key)
        else:
            self.media.resume(key)
        return None

    def media_failed(self, key: str, reason: str) -> None:
        """The worker refused a command of a recorded call: it goes on unrecorded."""
        call = self._by_key(key)
        if call is not None and call.record:
            call.record = False
            self.journal.record(RecordingRefused(call.id, reason))
        log.warning("call %s: %s", key, reason)

    def media_stopped(self, key: str, reason: str) -> None:
        """The call's media is gone (timeout, or the worker died): hang it up, saying why."""
        call = self._by_key(key)
        if call is None:
            return
        if call.state == "answered":
            self._hang_up(call, reason)
        else:
            self._cancel_branches(call)
            self._fail(call, 500, "error", reason)

    # -- endings ----------------------------------------------------------------------------

    def _answer_caller(self, call: Call, status: int, reason: str | None = None) -> None:
        try:
            self.service.respond(
                call.tid, call.request.response(status, reason, to_tag=call.local_tag)
            )
        except SipError as exc:
            log.info("call %s: could not answer the caller %d: %s", call.id, status, exc)

    def _fail(self, call: Call, status: int, outcome: str, reason: str) -> None:
        self._answer_caller(call, status)
        self._end(
            call,
            DISPOSITION.get(outcome, "failed"),
            "system" if outcome != "busy" else "callee",
            reason,
        )

    def _end(self, call: Call, disposition: str, hangup_by: str, reason: str) -> None:
        if call.state == "ended":
            return
        if call.callee is not None and disposition == "answered":
            self.journal.record(
                AttemptEnded(call.id, call.callee.seq, "answered", 200, reason, self.wall())
            )
        call.state = "ended"
        if self.metrics is not None:
            self.metrics.calls.labels(disposition).inc()
        if self.media is not None:
            self.media.release(str(call.id))
        self._stop_ring_timer(call)
        for timer in call.timers:
            if timer.active():
                timer.cancel()
        call.timers.clear()
        self.journal.record(CallEnded(call.id, disposition, hangup_by, reason, self.wall()))
        summary = (
            f"call: {call.id} to {call.number.e164} ended {disposition} "
            f"(by {hangup_by}: {reason}; {call.attempts} attempt(s)) "
            f"Call-ID {call.request.call_id}"
        )
        task = asyncio.get_running_loop().create_task(
            self._announce_when_durable(call, summary, disposition, hangup_by, reason)
        )
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)
        self.calls.pop(call.tid, None)
        for tid in call.tids:
            self._by_branch.pop(tid, None)
            self._relays.pop(tid, None)
        for leg in (call.caller, call.callee.dialog if call.callee else None):
            if leg is not None:
                self._connected.pop(leg.id, None)

    async def _announce_when_durable(
        self, call: Call, summary: str, disposition: str, hangup_by: str, reason: str
    ) -> None:
        await self.journal.flushed()
        # One line per finished call; its fields are what tools read (never a number).
        log.info(
            summary,
            extra={
                "event": "call.ended",
                "call_id": str(call.id),
                "sip_call_id": call.request.call_id,
                "client_id": str(call.number.client_id),
                "tracking_number": call.number.e164,
                "disposition": disposition,
                "hangup_by": hangup_by,
                "attempts": call.attempts,
            },
        )
        self._notify(
            call,
            "call.completed",
            disposition=disposition,
            hangup_by=hangup_by,
            reason=reason,
            attempts=call.attempts,
        )

    def _notify(self, call: Call, event: str, **extra: Any) -> None:
        if self.webhooks is None:
            return
        data = {
            "call_id": call.id,
            "tracking_number": call.number.e164,
            "caller_number": call.caller_number,
            "session_id": call.session_id,
            "attribution": call.attribution,
            **extra,
        }
        self.webhooks.emit_soon(call.number.client_id, event, data)

    def _dialled(self, call: Call) -> None:
        """The caller hears ringing or an answer for the first time: the post-dial delay."""
        if not call.ringing and self.metrics is not None:
            self.metrics.post_dial_delay.observe(self.clock.seconds() - call.arrived)

    def _stop_ring_timer(self, call: Call) -> None:
        if call.ring_timer is not None and call.ring_timer.active():
            call.ring_timer.cancel()
        call.ring_timer = None


def _dialog_response(request: Request, status: int, to_tag: str) -> Response:
    """A response that creates the caller's dialog: Record-Route copied (§12.1.1), so that a
    record-routing proxy in front (a carrier's SBC, Kamailio's dispatcher) stays on the path of
    the caller's ACK, BYE and re-INVITE."""
    response = request.response(status, to_tag=to_tag)
    for route in request.headers.get_all("record-route"):
        response.headers.add("Record-Route", route)
    return response
