"""The B2BUA adapter: feeds the call controller (controller.py) and carries out its actions.

Rules of this file:
- No call logic here: SIP events from the front door, timer ticks, resolver and media results
  become controller events; the controller's actions become SIP sends, timers, journal records,
  webhooks and media commands, executed in the order given.
- The controller numbers the requests it sends (``ref``); this file maps them to the SIP
  layer's transaction ids and back.
- All work happens on the one event loop; timers come from the injected clock, wall-clock time
  from ``wall``.
- Nothing waits for the call journal before a call goes on: ``Record`` queues the event (the
  journal spools it to disk and writes it behind), and only a finished call's log line waits
  until its record is in the database. Webhook events ride the journal too (``Notify``, and
  call.completed on ``Finished``): stored with the rows they report on, never before them.
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

from callrouter.metrics import Metrics
from callrouter.privacy.suppression import UNRESTRICTED, CallerTreatment
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
    ObserveKeepalive,
    PlayPrompt,
    Record,
    Resolve,
    Respond,
    SendRequest,
    SendStateless,
    StartTimer,
)
from callrouter.routing.anchoring import MediaAnchor
from callrouter.routing.call import Call, Journal, TimerKey, static_attribution, webhook_data
from callrouter.routing.call_states import CallState
from callrouter.routing.call_timers import CallTimers
from callrouter.routing.controller import Controller
from callrouter.routing.dialplans import DialplanLibrary
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
from callrouter.routing.outbound import destination_uri
from callrouter.routing.sessions import Sessions
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.errors import SipError
from callrouter.sip.events import (
    AckReceived,
    CancelReceived,
    Flow,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from callrouter.sip.message import Request
from callrouter.store.ids import new_id
from callrouter.store.numbers import Number
from callrouter.transport.resolver import Resolver
from callrouter.transport.service import SipService
from callrouter.webhooks import WebhookSender

__all__ = ["B2bua", "Call", "Journal"]

log = logging.getLogger(__name__)


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
    session_expires: int = 1800
    """The session interval destinations are asked for when the caller asks for none (0: none)."""
    max_call_seconds: float = 14400.0
    """How long an answered call without a session timer may last (0: no limit)."""
    dialog_keepalive_seconds: float = 60.0
    """How often an answered call without a session timer sends OPTIONS on both legs (0: never)."""
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
    """Counts finished calls and dialog keepalives, and measures post-dial delay."""
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    controller: Controller = field(init=False)
    _tids: dict[str, int] = field(default_factory=dict)
    """The controller's number of each of its requests by transaction id, and back."""
    _refs: dict[int, str] = field(default_factory=dict)
    _timers: CallTimers = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: bool = False
    _shutdown_byes: set[str] = field(default_factory=set)
    """The BYE transactions ``shut_down`` started that have no final answer yet."""

    def __post_init__(self) -> None:
        self._timers = CallTimers(self.clock, self._fire)
        self.controller = Controller(
            self.service,
            self.service.endpoint.timers,
            self.media,
            self.target_timeout,
            session_expires=self.session_expires,
            max_call_seconds=self.max_call_seconds,
            dialog_keepalive_seconds=self.dialog_keepalive_seconds,
        )

    @property
    def calls(self) -> dict[str, Call]:
        """Calls in progress by their caller's INVITE transaction."""
        return self.controller.calls

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
        )
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
            call.journey = visit.journey if visit else []
            call.caller_number = caller or None
            if not treatment.record_allowed:
                call.record_refusal = "the caller withdrew consent to recording"
        self._feed(CallArrived(call, dialplan_found=plan is not None))

    def cancelled(self, event: CancelReceived) -> bool:
        if not self.controller.routing(event.invite_transaction_id):
            return False
        self._feed(CallerCancelled(event.invite_transaction_id))
        return True

    def response(self, event: ResponseReceived) -> bool:
        tid = event.transaction_id
        if tid is None:
            if not self.controller.owns_response(event.response):
                return False
            self._feed(StrayResponse(event.response, event.flow))
            return True
        if tid in self._shutdown_byes:
            if event.response.status >= 200:
                self._shutdown_byes.discard(tid)
            return True
        ref = self._tids.get(tid)
        if ref is None:
            return False
        self._feed(Responded(ref, event.response))
        return True

    def timed_out(self, event: TransactionTimedOut) -> bool:
        if event.transaction_id in self._shutdown_byes:
            self._shutdown_byes.discard(event.transaction_id)
            return True
        ref = self._tids.get(event.transaction_id)
        if ref is None:
            return False
        self._feed(TimedOut(ref))
        return True

    def in_dialog(self, event: RequestReceived) -> bool:
        """A request with a To tag: BYE, re-INVITE, UPDATE, INFO for one of our calls."""
        if self.controller.leg_of(event.request) is None:
            return False
        self._feed(InDialogRequest(event.transaction_id, event.request))
        return True

    def holds_dialog(self, request: Request) -> bool:
        """Whether a request with a To tag belongs to one of our calls (the source policy asks,
        so that a stranger cannot pass for a destination by inventing a tag)."""
        return self.controller.leg_of(request) is not None

    def ack(self, event: AckReceived) -> bool:
        if self.controller.leg_of(event.request) is None:
            return False
        self._feed(AckArrived(event.request))
        return True

    # -- shutdown ------------------------------------------------------------------------------

    def shut_down(self) -> int:
        """The server stops: end every call now, each recorded as ended by shutdown. Answered
        calls get BYE on both legs; calls still being routed are cancelled and their callers
        get 503 (a carrier tries elsewhere). Returns how many calls were ended."""
        before = len(self.calls)
        self._stopping = True
        try:
            self._feed(ServerStopping())
        finally:
            self._stopping = False
        return before - len(self.calls)

    @property
    def byes_unanswered(self) -> int:
        """BYEs sent by ``shut_down`` still waiting for their final answer."""
        return len(self._shutdown_byes)

    # -- media worker events --------------------------------------------------------------------

    def pause_recording(self, call_id: uuid.UUID, paused: bool) -> str | None:
        """Pause or resume a live call's recording (PCI); None when done, else why not."""
        call = self.controller.call(call_id)
        if call is None or call.state is not CallState.ANSWERED:
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
        call_id = _call_id(key)
        if call_id is not None:
            self._feed(MediaRefused(call_id, reason))
        log.warning("call %s: %s", key, reason)

    def media_stopped(self, key: str, reason: str) -> None:
        """The call's media is gone (timeout, or the worker died): hang it up, saying why."""
        call_id = _call_id(key)
        if call_id is not None:
            self._feed(MediaStopped(call_id, reason))

    # -- carrying out the controller's actions ---------------------------------------------------

    def _feed(self, event: ControllerEvent) -> None:
        for action in self.controller.handle(event, self.clock.seconds(), self.wall()):
            self._execute(action)

    def _execute(self, action: Action) -> None:
        match action:
            case SendRequest(request=request, flow=flow, ref=ref):
                tid = self.service.send_request(request, flow)
                if ref is not None:
                    self._tids[tid] = ref
                    self._refs[ref] = tid
                if self._stopping and request.method == "BYE":
                    self._shutdown_byes.add(tid)
            case Respond(tid=tid, response=response):
                try:
                    self.service.respond(tid, response)
                except SipError as exc:
                    log.info("could not answer %d: %s", response.status, exc)
            case SendStateless(message=message, flow=flow):
                self.service.send_stateless(message, flow)
            case CancelRequest(ref=ref):
                if (invite := self._refs.get(ref)) is not None:
                    self.service.cancel(invite)
            case Forget(ref=ref):
                if (gone := self._refs.pop(ref, None)) is not None:
                    self._tids.pop(gone, None)
            case StartTimer(key=key, delay=delay):
                self._timers.start(key, delay)
            case CancelTimer(key=key):
                self._timers.cancel(key)
            case Record(event=event):
                self.journal.record(event)
            case Notify(call_id=call_id, client_id=client_id, event=name, data=data):
                self._raise(call_id, client_id, name, data)
            case Resolve(call=call_id, seq=seq, destination=destination):
                self._spawn(self._resolve(call_id, seq, destination))
            case MediaCommand(call=call_id, command=command):
                self._media_command(str(call_id), command)
            case AwaitMedia(call=call_id):
                self._await_media(call_id)
            case PlayPrompt(call=call_id, prompt=prompt, codec=codec):
                self._play(call_id, prompt, codec)
            case ObserveDialled(seconds=seconds):
                if self.metrics is not None:
                    self.metrics.post_dial_delay.observe(seconds)
            case ObserveKeepalive(leg=leg, outcome=outcome):
                if self.metrics is not None:
                    self.metrics.keepalive_observed(leg, outcome)
            case Finished(call=call):
                if self.metrics is not None:
                    self.metrics.calls.labels(action.disposition).inc()
                data = webhook_data(
                    call,
                    disposition=action.disposition,
                    hangup_by=action.hangup_by,
                    reason=action.reason,
                    attempts=call.attempts,
                    journey=call.journey,
                )
                # The call's id names its end: the closer of a lost node's calls raises the
                # same one, so a call ends once for its webhooks whoever closes it.
                self._raise(call.id, call.number.client_id, "call.completed", data, call.id)
                self._spawn(self._announce_when_durable(action))

    def _raise(
        self,
        call_id: uuid.UUID,
        client_id: uuid.UUID,
        event: str,
        data: dict[str, Any],
        event_id: uuid.UUID | None = None,
    ) -> None:
        if self.webhooks is None:
            return
        raised = self.webhooks.raised(
            call_id, client_id, event, data, at=self.wall(), event_id=event_id
        )
        if raised is not None:
            self.journal.record(raised)

    def _fire(self, key: TimerKey) -> None:
        self._feed(TimerFired(key))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, call_id: uuid.UUID, seq: int, destination: str) -> None:
        uri, trunk = destination_uri(destination, self.trunks.outbound())
        flows = await self.resolver.locate(uri) if uri is not None else []
        failure = None
        key = str(call_id)
        if self.media is not None and key in self.media:
            # Our SDP may only leave once the worker has bound the ports it names.
            failure = await self.media.bound(key)
        self._feed(Resolved(call_id, seq, uri, trunk, flows, failure))

    def _media_command(self, key: str, command: str) -> None:
        if self.media is None:
            return
        if command == "release":
            self.media.release(key)
        elif command == "record":
            self.media.record(key)
        elif command == "withdraw":
            self.media.withdraw(key)

    def _await_media(self, call_id: uuid.UUID) -> None:
        if self.media is None:
            self._feed(MediaBound(call_id, "no media worker"))
            return
        self.media.bound(str(call_id)).add_done_callback(
            lambda bound: self._feed(MediaBound(call_id, bound.result()))
        )

    def _play(self, call_id: uuid.UUID, prompt: str, codec: str) -> None:
        assert self.media is not None

        def played(future: asyncio.Future[dict[str, Any]]) -> None:
            failed = not future.cancelled() and future.exception() is not None
            if failed:
                # The call goes on to its next step: a caller is never kept from the
                # destination because an announcement could not be played.
                log.warning(
                    "call %s: announcement %s not played: %s", call_id, prompt, future.exception()
                )
            if self.metrics is not None and not future.cancelled():
                self.metrics.announcements.labels("failed" if failed else "played").inc()
            self._feed(PromptPlayed(call_id))

        self.media.play(str(call_id), prompt, codec).add_done_callback(played)

    async def _announce_when_durable(self, finished: Finished) -> None:
        call = finished.call
        await self.journal.flushed()
        # One line per finished call; its fields are what tools read (never a number).
        log.info(
            f"call: {call.id} to {call.number.e164} ended {finished.disposition} "
            f"(by {finished.hangup_by}: {finished.reason}; {call.attempts} attempt(s)) "
            f"Call-ID {call.sip_call_id}",
            extra={
                "event": "call.ended",
                "call_id": str(call.id),
                "sip_call_id": call.sip_call_id,
                "client_id": str(call.number.client_id),
                "tracking_number": call.number.e164,
                "disposition": finished.disposition,
                "hangup_by": finished.hangup_by,
                "attempts": call.attempts,
            },
        )


def _call_id(key: str) -> uuid.UUID | None:
    """The call of a media worker key (a call id), None when it is not one."""
    try:
        return uuid.UUID(key)
    except ValueError:
        return None
