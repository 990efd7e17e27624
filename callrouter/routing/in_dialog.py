"""Connected calls in the call controller: BYE, re-INVITE, UPDATE and INFO on one leg answered
or relayed to the other, the relayed request's answer carried back, the caller's ACK, and the
session timer each 2xx to a re-INVITE or UPDATE restarts (routing/session_timers.py).
"""

from __future__ import annotations

from callrouter.routing.actions import Respond, SendStateless
from callrouter.routing.call import Call, Relay
from callrouter.routing.call_media import CallMedia
from callrouter.routing.outbound import ack_request
from callrouter.routing.session_timers import (
    REFRESHES,
    answer_interval,
    carry_request,
    carry_response,
)
from callrouter.sip.message import Request, Response

__all__ = ["InDialogRelay"]


class InDialogRelay(CallMedia):
    """The controller's connected calls: in-dialog requests answered or relayed."""

    # -- connected calls ---------------------------------------------------------------------------

    def _ack_arrived(self, request: Request) -> None:
        found = self.leg_of(request)
        if found is None:
            return
        call, from_caller = found
        if from_caller and call.repeater is not None:
            call.repeater.ack()
            call.repeater = None
            self._stop_timer(call, "answer")
            self._settled(call)

    def _settled(self, call: Call) -> None:
        """The caller ACKed our 2xx: the call is up, maybe for hours, and every full collection
        walks what it holds. Nothing reads the caller's INVITE any more (a CANCEL is too late,
        the call is answered, the dialogs carry the in-dialog requests and the call's end), so
        it goes. Our INVITE to the callee is still read (the ACK of a 2xx sent again, a second
        2xx from a downstream fork), seldom: only its parses go, made again if asked for."""
        call.request = None
        if call.callee is not None and call.callee.request is not None:
            call.callee.request.headers.forget_parsed()

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
        if request.method in REFRESHES:
            carry_request(request, relayed.headers)
        relay = Relay(call, tid, request, not from_caller, relayed)
        self._send(relayed, self._dialog_flow(call, other, other_flow), (call, relay))

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
        refresh = relay.incoming.method in REFRESHES
        session = None
        if refresh and 200 <= response.status < 300:
            session = answer_interval(relay.relayed, relay.incoming, response)
        if refresh:
            carry_response(response, answer, session)
        self._emit(Respond(relay.incoming_tid, answer))
        if refresh and 200 <= response.status < 300:
            self._keep_alive(call, session)  # RFC 4028 §10: a refresh, whichever leg sent it
        if relay.incoming.method == "INVITE" and 200 <= response.status < 300:
            # We are the UAC of the leg that answered: the ACK is ours to send. The side that
            # asked ACKs our 2xx in turn, and that ACK stays on its leg.
            flow = self._dialog_flow(
                call, target, self._leg_flow(call, to_caller=relay.towards_caller)
            )
            ack = ack_request(target, response.cseq.number, flow, self.local.sent_by(flow))
            self._emit(SendStateless(ack, flow))
