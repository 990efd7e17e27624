"""Dialog keepalives on the sans-IO controller, with in-memory peers on a fake clock: an answered
call without a session timer sends OPTIONS on both legs every interval; answers that prove the
peer holds the dialog keep the call, a 481 or no answer ends it with BYE and a reason saying
so; a call with a session timer gets none, and 0 turns them off."""

from __future__ import annotations

import pytest

from callrouter.call_events import CallEnded
from callrouter.config import load_config
from callrouter.routing.actions import ObserveKeepalive, SendRequest
from callrouter.routing.call import Call
from callrouter.routing.call_states import CallState
from callrouter.routing.controller import Controller
from callrouter.routing.dialplan import Dial
from callrouter.routing.events import InDialogRequest, Responded, TimedOut
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.transactions import Timers

from .call_peers import CARRIER, Local, Peers, answer_to

DESK = "sip:desk@203.0.113.9:5070"
NO_TIMERS = (("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),)
"""A carrier (and a PBX) that does not do session timers."""


def peers(**settings: float) -> Peers:
    settings.setdefault("dialog_keepalive_seconds", 30)
    controller = Controller(Local(), Timers(), **settings)  # type: ignore[arg-type]
    return Peers(controller=controller)


def connect(p: Peers, pbx: tuple[tuple[str, str], ...] = ()) -> tuple[Call, int]:
    """A call without session timers (unless ``pbx`` answers with one), answered and ACKed."""
    call = p.arrive(Dial((DESK,), ring_timeout=20), headers=NO_TIMERS)
    (ref,) = p.resolve()
    p.reply(ref, 200, headers=pbx)
    p.carrier_acks(call)
    return call, ref


def options(p: Peers, call: Call, ref: int) -> tuple[list[SendRequest], list[SendRequest]]:
    """OPTIONS sent (on the caller's leg, on the destination's)."""
    sent = p.sent("OPTIONS")
    callee_id = p.invites[ref].request.call_id
    return (
        [s for s in sent if s.request.call_id == call.sip_call_id],
        [s for s in sent if s.request.call_id == callee_id],
    )


def answer(p: Peers, sent: SendRequest, status: int) -> None:
    assert sent.ref is not None
    tag = sent.request.to.tag or ""
    p.feed(Responded(sent.ref, answer_to(sent.request, status, tag)))


def byes(p: Peers, call: Call, ref: int) -> tuple[int, int]:
    """BYEs sent (to the caller, to the destination)."""
    return (
        len(p.byes_to(call.sip_call_id)),
        len(p.byes_to(p.invites[ref].request.call_id)),
    )


def ended(p: Peers) -> list[tuple[str, str, str]]:
    return [(e.disposition, e.hangup_by, e.reason) for e in p.events(CallEnded)]


def observed(p: Peers) -> list[tuple[str, str | None]]:
    """What the controller reported for the metrics: (leg, None) sent, (leg, outcome)."""
    return [(a.leg, a.outcome) for a in p.actions if isinstance(a, ObserveKeepalive)]


def test_options_go_on_both_legs_at_each_interval() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(29.9)
    assert options(p, call, ref) == ([], [])
    p.advance(0.2)
    (to_caller,), (to_callee,) = options(p, call, ref)
    # In the caller's dialog: its tags, its Contact, the CSeq after our 200's INVITE (ours: 1).
    assert to_caller.request.to.tag == "carrier" and to_caller.request.from_.tag == "ours1"
    assert to_caller.request.uri == "sip:gw@198.51.100.7:5060"
    assert to_caller.request.cseq.number == 1 and to_caller.flow == CARRIER
    assert to_caller.request.headers.get("Accept") == "application/sdp"
    # In the destination's dialog: the next CSeq after our INVITE's.
    invite = p.invites[ref].request
    assert to_callee.request.to.tag == "pbx" and to_callee.request.call_id == invite.call_id
    assert to_callee.request.cseq.number == invite.cseq.number + 1
    assert to_callee.request.uri == "sip:pbx@203.0.113.9:5070"
    answer(p, to_caller, 200)
    answer(p, to_callee, 200)
    p.advance(30)
    callers, callees = options(p, call, ref)
    assert [s.request.cseq.number for s in callers] == [1, 2]  # a new request, its own CSeq
    assert len(callees) == 2
    assert call.state is CallState.ANSWERED and byes(p, call, ref) == (0, 0)


@pytest.mark.parametrize("status", [200, 405, 501, 404, 503])
def test_any_other_final_answer_keeps_the_call(status: int) -> None:
    """A peer that refuses OPTIONS (405, 501) or answers oddly still had to find the dialog."""
    p = peers()
    call, ref = connect(p)
    for _ in range(3):
        p.advance(30)
        for leg in options(p, call, ref):
            answer(p, leg[-1], status)
    assert len(options(p, call, ref)[0]) == 3 and len(options(p, call, ref)[1]) == 3
    assert call.state is CallState.ANSWERED and byes(p, call, ref) == (0, 0) and ended(p) == []
    assert {k.kind for k in p.timers} == {"ceiling", "keepalive"}
    outcome = "answered" if status == 200 else "other"
    # Each interval: sent on both legs, then each answer counted for the metrics.
    each = [("caller", None), ("callee", None), ("caller", outcome), ("callee", outcome)]
    assert observed(p) == 3 * each


def test_a_provisional_answer_decides_nothing() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(30)
    _, (to_callee,) = options(p, call, ref)
    answer(p, to_callee, 100)
    assert call.state is CallState.ANSWERED and p.controller.waits_for(to_callee.ref or 0)
    assert observed(p) == [("caller", None), ("callee", None)]


def test_a_481_from_the_destination_ends_the_call_with_bye_to_the_caller() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(30)
    (to_caller,), (to_callee,) = options(p, call, ref)
    answer(p, to_caller, 200)
    answer(p, to_callee, 481)
    # The PBX holds no dialog any more: a BYE to it would only get 481 again.
    assert byes(p, call, ref) == (1, 0)
    assert ended(p) == [("answered", "system", "keepalive: the callee lost the dialog (481)")]
    assert [(f.hangup_by, f.reason) for f in p.finished] == [
        ("system", "keepalive: the callee lost the dialog (481)")
    ]
    assert p.controller.calls == {} and p.timers == {}
    p.advance(300)
    assert len(p.sent("OPTIONS")) == 2  # the timer stopped with the call
    sent = [("caller", None), ("callee", None)]
    assert observed(p) == [*sent, ("caller", "answered"), ("callee", "lost")]


def test_a_481_from_the_caller_ends_the_call_with_bye_to_the_destination() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(30)
    (to_caller,), (to_callee,) = options(p, call, ref)
    answer(p, to_caller, 481)
    assert byes(p, call, ref) == (0, 1)
    assert ended(p) == [("answered", "system", "keepalive: the caller lost the dialog (481)")]
    answer(p, to_callee, 200)  # the other leg's answer, after the end, changes nothing
    assert len(ended(p)) == 1 and p.timers == {}
    assert observed(p) == [("caller", None), ("callee", None), ("caller", "lost")]


def test_no_answer_at_all_ends_the_call_with_bye_on_both_legs() -> None:
    """Timer F: the destination vanished (rebooted, unplugged, its NAT binding gone)."""
    p = peers()
    call, ref = connect(p)
    p.advance(30)
    (to_caller,), (to_callee,) = options(p, call, ref)
    answer(p, to_caller, 200)
    assert to_callee.ref is not None
    p.advance(30)  # the next interval: the leg's OPTIONS still waits, so none goes again
    assert len(options(p, call, ref)[1]) == 1 and len(options(p, call, ref)[0]) == 2
    p.feed(TimedOut(to_callee.ref))
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "keepalive: no answer from the callee")]
    first = [("caller", None), ("callee", None), ("caller", "answered")]
    assert observed(p) == [*first, ("caller", None), ("callee", "no_answer")]
    assert p.controller.calls == {} and p.timers == {}


def test_a_408_counts_as_no_answer() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(30)
    (to_caller,), _ = options(p, call, ref)
    answer(p, to_caller, 408)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "keepalive: no answer from the caller")]
    assert observed(p)[-1] == ("caller", "no_answer")


def test_a_call_with_a_session_timer_gets_none() -> None:
    p = peers()
    call, ref = connect(p, (("Session-Expires", "1800;refresher=uas"),))
    assert call.session is not None and {k.kind for k in p.timers} == {"session"}
    p.advance(900)
    assert options(p, call, ref) == ([], []) and call.state is CallState.ANSWERED


def test_a_refresh_that_drops_the_timer_starts_them_and_one_that_sets_it_stops_them() -> None:
    p = peers()
    call, ref = connect(p, (("Session-Expires", "1800;refresher=uas"),))
    p.advance(100)

    def reinvite(session_expires: str | None) -> None:
        request = p.carrier_dialog(call).request("INVITE", b"v=0\r\n")
        p.feed(InDialogRequest(f"hold-{len(p.requests)}", request))
        relayed = p.requests[-1]
        assert relayed.ref is not None
        ok = answer_to(relayed.request, 200, relayed.request.to.tag or "", "sip:pbx@203.0.113.9")
        if session_expires is not None:
            ok.headers.add("Session-Expires", session_expires)
        p.feed(Responded(relayed.ref, ok))

    reinvite(None)  # a hold without timer fields: RFC 4028 leaves the dialog without a timer
    assert call.session is None and {k.kind for k in p.timers} == {"ceiling", "keepalive"}
    p.advance(30)
    assert [len(leg) for leg in options(p, call, ref)] == [1, 1]
    for leg in options(p, call, ref):
        answer(p, leg[-1], 200)
    reinvite("1800;refresher=uas")
    assert {k.kind for k in p.timers} == {"session"}
    p.advance(300)
    assert [len(leg) for leg in options(p, call, ref)] == [1, 1]


def test_zero_turns_them_off() -> None:
    p = peers(dialog_keepalive_seconds=0, max_call_seconds=3600)
    call, ref = connect(p)
    assert {k.kind for k in p.timers} == {"ceiling"}
    p.advance(3599)
    assert options(p, call, ref) == ([], []) and call.state is CallState.ANSWERED


def test_a_bye_stops_them_and_a_late_answer_is_ignored() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(30)
    _, (to_callee,) = options(p, call, ref)
    p.in_dialog(p.carrier_dialog(call), "BYE", "carrier-bye")
    assert ended(p) == [("answered", "caller", "BYE")] and p.timers == {}
    assert to_callee.ref in p.forgotten
    answer(p, to_callee, 481)
    p.advance(300)
    assert len(ended(p)) == 1 and len(p.sent("OPTIONS")) == 2
    assert observed(p) == [("caller", None), ("callee", None)]  # the late 481 decided nothing


def test_the_cseq_counts_on_across_relayed_requests() -> None:
    """A relayed re-INVITE and our OPTIONS share the leg's CSeq (§12.2.1.1)."""
    p = peers()
    call, ref = connect(p)
    pbx = p.pbx_dialog(ref)
    p.feed(InDialogRequest("pbx-info", pbx.request("INFO")))
    relayed = p.requests[-1]
    assert relayed.request.call_id == call.sip_call_id and relayed.request.cseq.number == 1
    p.advance(30)
    (to_caller,), _ = options(p, call, ref)
    assert to_caller.request.cseq.number == 2


def three_intervals(p: Peers, call: Call, ref: int) -> tuple[int, int]:
    """OPTIONS sent over three intervals, each answered 200 (on the caller's leg, on the
    destination's)."""
    for _ in range(3):
        p.advance(30)
        for leg in options(p, call, ref):
            if leg:
                answer(p, leg[-1], 200)
    assert call.state is CallState.ANSWERED and byes(p, call, ref) == (0, 0)
    callers, callees = options(p, call, ref)
    return len(callers), len(callees)


def test_a_trunk_with_keepalives_off_gets_none_and_the_other_leg_still_does() -> None:
    """A carrier that wrongly answers 481 to an OPTIONS it does not handle: its trunk turns
    them off for its leg, and its calls are not cut."""
    p = peers()
    call = p.arrive(
        Dial((DESK,), ring_timeout=20), headers=NO_TIMERS, trunk=Trunk("odd", keepalives=False)
    )
    (ref,) = p.resolve()
    p.reply(ref, 200)
    p.carrier_acks(call)
    assert three_intervals(p, call, ref) == (0, 3)
    assert ("caller", None) not in observed(p)


@pytest.mark.parametrize(("setting", "to_caller"), [("true", 3), ("false", 0)])
def test_carrier_keepalives_turns_them_off_for_the_config_trunks_caller_leg(
    setting: str, to_caller: int
) -> None:
    """The same for the ``config`` trunk (``[sip] carriers``), which has no /v1/trunks row: the
    trunk the call's source picks carries the setting to the controller."""
    sip = load_config(
        None, {}, {"sip.carriers": "198.51.100.0/24", "sip.carrier_keepalives": setting}
    ).sip
    trunk = TrunkTable(Trunk.configured(sip)).for_source(CARRIER.host)
    assert trunk is not None and trunk.name == "config"
    p = peers()
    call = p.arrive(Dial((DESK,), ring_timeout=20), headers=NO_TIMERS, trunk=trunk)
    (ref,) = p.resolve()
    p.reply(ref, 200)
    p.carrier_acks(call)
    assert three_intervals(p, call, ref) == (to_caller, 3)


def test_carrier_keepalives_off_also_spares_the_leg_out_through_the_outbound_trunk() -> None:
    """``[sip] outbound_trunk`` is the same ``config`` trunk: an E.164 destination reached
    through it gets none, and the caller (from another trunk) still does."""
    sip = load_config(
        None, {}, {"sip.outbound_trunk": "sip:gw.example", "sip.carrier_keepalives": "false"}
    ).sip
    p = peers()
    call = p.arrive(Dial(("+441515550002",), ring_timeout=20), headers=NO_TIMERS)
    (ref,) = p.resolve(outbound=Trunk.configured(sip))
    assert p.invites[ref].request.uri == "sip:+441515550002@gw.example"
    p.reply(ref, 200)
    p.carrier_acks(call)
    assert three_intervals(p, call, ref) == (3, 0)
