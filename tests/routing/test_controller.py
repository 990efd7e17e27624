"""The call controller driven by in-memory carrier and PBX peers on a fake clock: forks, cancels,
failover, re-INVITEs, retransmissions and timeouts, each case through the controller's events
and actions only."""

from __future__ import annotations

from callrouter.call_events import (
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
)
from callrouter.routing.call_states import BranchState, CallState
from callrouter.routing.dialplan import Dial, Reject, SetDuration
from callrouter.routing.events import CallerCancelled, Responded, ServerStopping, StrayResponse
from callrouter.sip.events import Flow
from callrouter.sip.message import Request
from callrouter.sip.transactions import Timers

from .call_peers import CARRIER, Peers

DESK = "sip:desk@203.0.113.9:5070"
MOBILE = "sip:mobile@203.0.113.10:5070"
VOICEMAIL = "sip:voicemail@203.0.113.11:5070"
NO_ANSWER = frozenset({"no_answer", "busy", "error"})
T1_64 = 64 * Timers().t1


def two_forks(peers: Peers) -> tuple[int, int]:
    peers.arrive(Dial((DESK, MOBILE), ring_timeout=20, continue_on=frozenset()))
    desk, mobile = peers.resolve()
    return desk, mobile


def answered(peers: Peers) -> tuple[int, Request]:
    """A call to DESK answered by the PBX and ACKed by the carrier."""
    call = peers.arrive(Dial((DESK,), ring_timeout=20))
    (ref,) = peers.resolve()
    peers.reply(ref, 180)
    peers.reply(ref, 200)
    peers.carrier_acks(call)
    return ref, peers.carrier_invites[call.tid]


def test_the_first_2xx_wins_and_the_other_fork_is_cancelled() -> None:
    peers = Peers()
    desk, mobile = two_forks(peers)
    call = next(iter(peers.controller.calls.values()))
    assert [e.destination for e in peers.events(AttemptStarted)] == [DESK, MOBILE]
    peers.reply(desk, 180)
    peers.reply(mobile, 180, tag="mob")
    assert peers.caller_statuses(call) == [180]  # ringing is relayed once
    peers.reply(desk, 200)
    assert peers.caller_statuses(call) == [180, 200]
    assert peers.cancels == [mobile]
    assert call.state is CallState.ANSWERED and call.callee is not None
    assert [b.state for b in call.branches] == [BranchState.ANSWERED, BranchState.CANCELLED]
    peers.reply(mobile, 487, tag="mob")
    ended = [e for e in peers.events(AttemptEnded)]
    assert [(e.seq, e.result) for e in ended] == [(2, "cancelled")]
    assert len(peers.events(AttemptAnswered)) == 1 and len(peers.events(CallAnswered)) == 1
    assert len(peers.events(AttemptRinging)) == 2


def test_a_second_2xx_from_another_fork_is_acked_and_hung_up() -> None:
    peers = Peers()
    desk, mobile = two_forks(peers)
    call = next(iter(peers.controller.calls.values()))
    peers.reply(desk, 200)
    assert peers.cancels == []  # the mobile sent nothing yet: its CANCEL waits (§9.1)
    peers.reply(mobile, 200, tag="mob")
    mobile_call_id = peers.invites[mobile].request.call_id
    assert [a.call_id for a in peers.acks()] == [
        peers.invites[desk].request.call_id,
        mobile_call_id,
    ]
    (bye,) = peers.byes_to(mobile_call_id)
    assert bye.to.tag == "mob"
    assert peers.caller_statuses(call) == [200]  # the caller saw one answer
    assert call.callee is not None and call.callee.seq == 1
    assert peers.ends() == []
    # The second 2xx again (our ACK was lost): ACKed again, no second BYE.
    peers.reply(mobile, 200, tag="mob")
    assert len(peers.acks()) == 3 and len(peers.byes_to(mobile_call_id)) == 1


def test_cancel_before_any_provisional_waits_for_one() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20))
    (ref,) = peers.resolve()
    peers.reply(ref, 100)
    peers.feed(CallerCancelled(call.tid))
    assert peers.caller_statuses(call) == [487]
    assert peers.cancels == []  # nothing provisional but a 100 yet: no CANCEL (§9.1)
    assert [(e.disposition, e.hangup_by) for e in peers.ends()] == [("cancelled", "caller")]
    assert peers.controller.calls == {}
    peers.reply(ref, 180)
    assert peers.cancels == [ref]  # it rings: now the CANCEL leaves
    peers.reply(ref, 487)
    assert ref in peers.forgotten
    assert len(peers.ends()) == 1


def test_cancel_before_any_answer_then_a_final_needs_no_cancel() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20))
    (ref,) = peers.resolve()
    peers.feed(CallerCancelled(call.tid))
    peers.reply(ref, 486)
    assert peers.cancels == [] and ref in peers.forgotten


def test_cancel_crossing_a_200_hangs_the_destination_up() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20))
    (ref,) = peers.resolve()
    peers.reply(ref, 180)
    peers.feed(CallerCancelled(call.tid))
    assert peers.cancels == [ref]
    peers.reply(ref, 200)  # the PBX answered before our CANCEL reached it
    call_id = peers.invites[ref].request.call_id
    assert [a.call_id for a in peers.acks()] == [call_id]
    assert len(peers.byes_to(call_id)) == 1
    assert peers.caller_statuses(call) == [180, 487]
    assert [e.disposition for e in peers.ends()] == ["cancelled"]
    assert ref in peers.forgotten


def test_a_cancel_after_the_answer_changes_nothing() -> None:
    peers = Peers()
    _ref, _request = answered(peers)
    assert not peers.controller.routing("carrier-invite-1")
    peers.feed(CallerCancelled("carrier-invite-1"))
    assert peers.ends() == [] and peers.sent("BYE") == []


def test_no_ack_for_our_2xx_ends_both_legs() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20))
    (ref,) = peers.resolve()
    peers.reply(ref, 200)
    peers.advance(T1_64 - 1)
    assert peers.ends() == []
    peers.advance(Timers().t2 + 1)  # the first repetition due after 64*T1 gives up
    repeated = [m for m, flow in peers.stateless if flow == CARRIER]
    assert len(repeated) >= 5 and {getattr(m, "status", None) for m in repeated} == {200}
    byes = peers.sent("BYE")
    assert {b.request.call_id for b in byes} == {
        call.sip_call_id,
        peers.invites[ref].request.call_id,
    }
    (end,) = peers.ends()
    assert (end.disposition, end.hangup_by, end.reason) == (
        "answered",
        "system",
        "no ACK from the caller",
    )


def test_the_callers_ack_stops_the_repetition() -> None:
    peers = Peers()
    answered(peers)
    sent = len(peers.stateless)
    peers.advance(T1_64 + 1)
    assert len(peers.stateless) == sent and peers.ends() == []
    # Only max_call_seconds and the dialog keepalive run on (the call has no session timer).
    assert sorted(k.kind for k in peers.timers) == ["ceiling", "keepalive"]


def test_a_stray_2xx_is_acked_again() -> None:
    peers = Peers()
    ref, _ = answered(peers)
    ok = peers.invites[ref].request.response(200, to_tag="pbx")
    assert peers.controller.owns_response(ok)
    acks = len(peers.acks())
    peers.feed(StrayResponse(ok, Flow("udp", "203.0.113.9", 5070)))
    assert len(peers.acks()) == acks + 1
    stranger = peers.invites[ref].request.response(200, to_tag="someone-else")
    assert not peers.controller.owns_response(stranger)


def test_a_503_sends_the_invite_to_the_next_target() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20, continue_on=frozenset()))
    first_flow, second_flow = Flow("udp", "203.0.113.20", 5060), Flow("udp", "203.0.113.21", 5060)
    (first,) = peers.resolve(first_flow, second_flow)
    peers.reply(first, 503)
    second = max(peers.invites)
    assert peers.invites[second].flow == second_flow
    assert peers.invites[second].request.call_id != peers.invites[first].request.call_id
    assert first in peers.forgotten
    assert peers.events(AttemptEnded) == []  # the same attempt, another target
    peers.reply(second, 503)  # no target left: the attempt fails
    (ended,) = peers.events(AttemptEnded)
    assert ended.result == "error"
    assert "also tried 203.0.113.20:5060" in ended.reason
    assert peers.caller_statuses(call) == [502]


def test_a_timeout_and_a_silent_target_fail_over() -> None:
    peers = Peers()
    peers.arrive(Dial((DESK,), ring_timeout=60))
    flows = [Flow("udp", f"203.0.113.{n}", 5060) for n in (20, 21, 22)]
    (first,) = peers.resolve(*flows)
    peers.time_out(first)  # Timer B
    second = max(peers.invites)
    assert peers.invites[second].flow == flows[1]
    peers.advance(peers.controller.target_timeout + 0.1)  # not even a 100 Trying
    third = max(peers.invites)
    assert third != second and peers.invites[third].flow == flows[2]
    assert peers.cancels == []  # a silent target is never CANCELled (§9.1)


def test_a_target_that_sent_100_trying_is_not_skipped() -> None:
    peers = Peers()
    peers.arrive(Dial((DESK,), ring_timeout=60))
    (first,) = peers.resolve(Flow("udp", "203.0.113.20", 5060), Flow("udp", "203.0.113.21", 5060))
    peers.reply(first, 100)
    peers.advance(peers.controller.target_timeout + 0.1)
    assert list(peers.invites) == [first]


def test_a_ringing_branch_never_fails_over() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=60, continue_on=frozenset()))
    (first,) = peers.resolve(Flow("udp", "203.0.113.20", 5060), Flow("udp", "203.0.113.21", 5060))
    peers.reply(first, 180)
    peers.reply(first, 503)
    assert list(peers.invites) == [first]
    assert peers.caller_statuses(call) == [180, 502]


def test_the_ring_timeout_cancels_and_takes_the_next_step() -> None:
    peers = Peers()
    call = peers.arrive(
        Dial((DESK,), ring_timeout=20, continue_on=NO_ANSWER),
        Dial((VOICEMAIL,), ring_timeout=20, continue_on=frozenset()),
    )
    (desk,) = peers.resolve()
    peers.reply(desk, 180)
    peers.advance(20)
    assert peers.cancels == [desk]
    (ended,) = peers.events(AttemptEnded)
    assert (ended.result, ended.reason) == ("no_answer", "ring timeout")
    (voicemail,) = peers.resolve()
    peers.reply(desk, 487)  # the cancelled branch's answer changes nothing
    assert call.state is CallState.ROUTING
    peers.reply(voicemail, 200)
    assert call.callee is not None and call.callee.destination == VOICEMAIL


def test_no_answer_at_the_last_step_answers_the_caller_480() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20, continue_on=frozenset()))
    peers.resolve()
    peers.advance(20)
    assert peers.caller_statuses(call) == [480]
    assert [(e.disposition, e.hangup_by) for e in peers.ends()] == [("no_answer", "system")]
    assert peers.timers == {}


def test_busy_answers_the_caller_486() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20, continue_on=frozenset()))
    (ref,) = peers.resolve()
    peers.reply(ref, 486)
    assert peers.caller_statuses(call) == [486]
    assert [(e.disposition, e.hangup_by) for e in peers.ends()] == [("busy", "callee")]


def test_an_unreachable_destination_and_a_reject_step() -> None:
    peers = Peers()
    call = peers.arrive(Dial(("sip:",), ring_timeout=20), Reject(403, "closed"))
    peers.resolve()
    assert peers.caller_statuses(call) == [403]
    assert peers.ends()[0].reason == "closed"


def test_a_re_invite_is_relayed_both_ways() -> None:
    peers = Peers()
    ref, _ = answered(peers)
    call_id = peers.invites[ref].request.call_id
    call = peers.controller.call(peers.starts()[0].call_id)
    assert call is not None
    carrier = peers.carrier_dialog(call)
    pbx = peers.pbx_dialog(ref)
    # The caller puts the destination on hold.
    peers.in_dialog(carrier, "INVITE", "carrier-reinvite", b"v=0 sendonly\r\n")
    relayed = peers.requests[-1]
    assert (relayed.request.method, relayed.request.call_id) == ("INVITE", call_id)
    assert relayed.request.body == b"v=0 sendonly\r\n" and relayed.ref is not None
    response = relayed.request.response(200, to_tag="pbx")
    response.body = b"v=0 recvonly\r\n"
    peers.feed(Responded(relayed.ref, response))
    (ok,) = peers.answers["carrier-reinvite"]
    assert (ok.status, ok.body) == (200, b"v=0 recvonly\r\n")
    assert peers.acks()[-1].call_id == call_id  # we ACK the destination's 2xx
    # The destination re-INVITEs back.
    peers.in_dialog(pbx, "INVITE", "pbx-reinvite", b"v=0 sendrecv\r\n")
    back = peers.requests[-1]
    assert back.request.call_id == call.sip_call_id and back.flow == CARRIER
    assert back.ref is not None
    peers.feed(Responded(back.ref, back.request.response(488)))
    assert [r.status for r in peers.answers["pbx-reinvite"]] == [488]
    assert peers.ends() == []


def test_a_relayed_request_that_times_out_is_answered_408() -> None:
    peers = Peers()
    ref, _ = answered(peers)
    peers.in_dialog(peers.pbx_dialog(ref), "INFO", "pbx-info")
    relay = peers.requests[-1]
    assert relay.ref is not None
    peers.time_out(relay.ref)
    assert [r.status for r in peers.answers["pbx-info"]] == [408]


def test_a_bye_from_the_caller_ends_both_legs() -> None:
    peers = Peers()
    ref, _request = answered(peers)
    call = next(iter(peers.controller.calls.values()))
    peers.in_dialog(peers.carrier_dialog(call), "BYE", "carrier-bye")
    assert [r.status for r in peers.answers["carrier-bye"]] == [200]
    assert len(peers.byes_to(peers.invites[ref].request.call_id)) == 1
    assert [(e.disposition, e.hangup_by) for e in peers.ends()] == [("answered", "caller")]
    assert peers.controller.calls == {} and peers.timers == {}
    assert peers.controller.leg_of(peers.carrier_dialog(call).request("BYE")) is None


def test_a_bye_from_the_destination_ends_both_legs() -> None:
    peers = Peers()
    ref, request = answered(peers)
    peers.in_dialog(peers.pbx_dialog(ref), "BYE", "pbx-bye")
    assert [r.status for r in peers.answers["pbx-bye"]] == [200]
    assert len(peers.byes_to(request.call_id)) == 1
    assert [(e.disposition, e.hangup_by) for e in peers.ends()] == [("answered", "callee")]


def test_max_duration_hangs_up_both_legs() -> None:
    peers = Peers()
    call = peers.arrive(SetDuration(30), Dial((DESK,), ring_timeout=20))
    (ref,) = peers.resolve()
    peers.reply(ref, 200)
    peers.carrier_acks(call)
    peers.advance(29)
    assert peers.ends() == []
    peers.advance(2)
    assert len(peers.sent("BYE")) == 2
    assert peers.ends()[0].reason == "max duration"


def test_shutdown_ends_every_call() -> None:
    peers = Peers()
    answered(peers)
    ringing = peers.arrive(Dial((MOBILE,), ring_timeout=20), call_number=2)
    (ref,) = peers.resolve()
    peers.reply(ref, 180)
    peers.feed(ServerStopping())
    assert peers.controller.calls == {}
    assert peers.caller_statuses(ringing)[-1] == 503
    assert peers.cancels == [ref] and len(peers.sent("BYE")) == 2
    assert sorted(e.reason for e in peers.ends()) == ["server shutdown"] * 2


def test_a_silent_targets_late_answers_are_settled() -> None:
    """The target given up for silence wakes up: its 180 gets a CANCEL, its 2xx an ACK and a
    BYE, and the branch goes on with the next target."""
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=60))
    (silent,) = peers.resolve(Flow("udp", "203.0.113.20", 5060), Flow("udp", "203.0.113.21", 5060))
    peers.advance(peers.controller.target_timeout + 0.1)
    live = max(peers.invites)
    assert peers.controller.waits_for(silent)  # its transaction runs on
    peers.reply(silent, 180, tag="late")
    assert peers.cancels == [silent]
    assert peers.caller_statuses(call) == []  # nothing of it reaches the caller
    peers.reply(silent, 200, tag="late")
    late_call_id = peers.invites[silent].request.call_id
    assert [a.call_id for a in peers.acks()] == [late_call_id]
    assert len(peers.byes_to(late_call_id)) == 1
    assert not peers.controller.waits_for(silent)
    peers.reply(live, 200)
    assert call.state is CallState.ANSWERED and call.callee is not None
    assert call.callee.ref == live


def test_a_fork_cancelled_before_it_rang_gets_its_cancel_when_it_rings() -> None:
    """The desk answers while the mobile has sent nothing: the mobile's CANCEL waits for its
    first provisional response, even though the call is answered by then (§9.1)."""
    peers = Peers()
    desk, mobile = two_forks(peers)
    peers.reply(desk, 200)
    assert peers.cancels == []
    peers.reply(mobile, 180, tag="mob")
    assert peers.cancels == [mobile]
    peers.reply(mobile, 487, tag="mob")
    call = next(iter(peers.controller.calls.values()))
    peers.carrier_acks(call)
    peers.in_dialog(peers.carrier_dialog(call), "BYE", "carrier-bye")
    assert {desk, mobile} <= peers.forgotten  # the call is over: nothing is left waiting
