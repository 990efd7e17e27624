"""Session timers (RFC 4028) and the call ceiling on the sans-IO controller, with in-memory
peers on a fake clock: what crosses between the legs, refreshes by re-INVITE and UPDATE on
either leg, the BYE on both legs when a session expires, 422 retried, max_call_seconds, and
the dialplan's shorter max_duration."""

from __future__ import annotations

from callrouter.call_events import CallEnded
from callrouter.routing.call import Call
from callrouter.routing.call_states import CallState
from callrouter.routing.controller import Controller
from callrouter.routing.dialplan import Dial, SetDuration
from callrouter.routing.events import InDialogRequest, Responded
from callrouter.sip.dialogs import Dialog
from callrouter.sip.message import Request, Response
from callrouter.sip.transactions import Timers

from .call_peers import Local, Peers, answer_to

DESK = "sip:desk@203.0.113.9:5070"
TIMER_CALLER = (
    ("Supported", "timer"),
    ("Session-Expires", "90;refresher=uac"),
    ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE, INFO"),
)
"""A carrier that supports session timers and refreshes every 45 s."""
TIMER_PBX = (("Session-Expires", "90;refresher=uac"), ("Require", "timer"))


def peers(**settings: float) -> Peers:
    return Peers(controller=Controller(Local(), Timers(), **settings))  # type: ignore[arg-type]


def connect(
    peers: Peers,
    caller: tuple[tuple[str, str], ...] = TIMER_CALLER,
    pbx: tuple[tuple[str, str], ...] = TIMER_PBX,
    *plan: SetDuration,
) -> tuple[Call, int]:
    """A call to DESK answered with ``pbx``'s headers in its 200, ACKed by the carrier."""
    call = peers.arrive(*plan, Dial((DESK,), ring_timeout=20), headers=caller)
    (ref,) = peers.resolve()
    peers.reply(ref, 200, headers=pbx)
    peers.carrier_acks(call)
    return call, ref


def our_200(peers: Peers, call: Call) -> Response:
    return next(r for r in peers.answers[call.tid] if r.status == 200)


def refresh(
    peers: Peers,
    dialog: Dialog,
    method: str = "INVITE",
    *,
    asked: tuple[tuple[str, str], ...] = (("Session-Expires", "90;refresher=uac"),),
    answered: tuple[tuple[str, str], ...] = (("Session-Expires", "90;refresher=uac"),),
    status: int = 200,
) -> tuple[Request, Response]:
    """One end sends a refresh on ``dialog``; the other end answers the relayed copy. Returns
    (the relayed request, our answer to the sender)."""
    tid = f"refresh-{len(peers.requests)}"
    request = dialog.request(method, b"v=0\r\n" if method == "INVITE" else b"")
    for name, value in (("Supported", "timer"), *asked):
        request.headers.add(name, value)
    peers.feed(InDialogRequest(tid, request))
    relayed = peers.requests[-1]
    assert relayed.ref is not None and relayed.request.method == method
    tag = relayed.request.to.tag or ""
    response = answer_to(relayed.request, status, tag, "sip:far@203.0.113.50:5060")
    for name, value in answered:
        response.headers.add(name, value)
    peers.feed(Responded(relayed.ref, response))
    return relayed.request, peers.answers[tid][-1]


def byes(peers: Peers, call: Call, ref: int) -> tuple[int, int]:
    """BYEs sent (to the caller, to the destination)."""
    return (
        len(peers.byes_to(call.sip_call_id)),
        len(peers.byes_to(peers.invites[ref].request.call_id)),
    )


def ended(peers: Peers) -> list[tuple[str, str, str]]:
    return [(e.disposition, e.hangup_by, e.reason) for e in peers.events(CallEnded)]


# -- what crosses the B2BUA ------------------------------------------------------------------


def test_the_callers_interval_reaches_the_destination_and_its_answer_the_caller() -> None:
    p = peers()
    call, ref = connect(p)
    invite = p.invites[ref].request
    assert invite.headers.get("Session-Expires") == "90;refresher=uac"
    assert "timer" in invite.headers.get_all("Supported")
    assert "UPDATE" in invite.headers.get_all("Allow")  # the carrier takes UPDATE
    ok = our_200(p, call)
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get_all("Require") == ["timer"]
    assert "timer" in ok.headers.get_all("Supported")


def test_a_caller_without_timers_gets_the_destination_asked_for_one_it_refreshes() -> None:
    p = peers()
    caller = (("Allow", "INVITE, ACK, BYE, CANCEL"),)
    call, ref = connect(p, caller, (("Session-Expires", "1800;refresher=uas"),))
    invite = p.invites[ref].request
    # No refresher asked and no Supported: timer, so RFC 4028 §9 makes the PBX the refresher.
    assert invite.headers.get("Session-Expires") == "1800"
    assert "timer" not in invite.headers.get_all("Supported")
    assert "UPDATE" not in invite.headers.get_all("Allow")  # the carrier takes no UPDATE
    ok = our_200(p, call)
    assert ok.headers.get("Session-Expires") == "1800;refresher=uas"
    assert ok.headers.get_all("Require") == []  # the caller never said it supports timers
    assert call.session is not None and call.session.interval == 1800
    assert {k.kind for k in p.timers} == {"session"}  # no ceiling: the timer watches the call


def test_a_destination_without_timers_has_the_caller_refresh() -> None:
    """RFC 4028 §8.2: the 200 gets the interval the caller asked for, with it as refresher."""
    p = peers()
    call, _ref = connect(p, TIMER_CALLER, ())
    ok = our_200(p, call)
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get_all("Require") == ["timer"]


def test_a_too_small_interval_from_a_caller_that_cannot_take_422_is_raised() -> None:
    p = peers()
    _call, ref = connect(p, (("Session-Expires", "30"),), ())
    invite = p.invites[ref].request
    assert invite.headers.get("Session-Expires") == "90"  # RFC 4028 §8.1: raised, not refused


def test_a_422_is_retried_once_asking_for_the_destinations_minimum() -> None:
    p = peers()
    call = p.arrive(Dial((DESK,), ring_timeout=20), headers=TIMER_CALLER)
    (first,) = p.resolve()
    p.reply(first, 422, headers=(("Min-SE", "600"),))
    second = max(p.invites)
    assert second != first and first in p.forgotten
    retry = p.invites[second]
    assert retry.flow == p.invites[first].flow
    assert retry.request.headers.get("Session-Expires") == "600;refresher=uac"
    assert retry.request.headers.get("Min-SE") == "600"
    assert p.caller_statuses(call) == []  # the caller never hears the 422
    p.reply(second, 422, headers=(("Min-SE", "1200"),))  # once only: then the call fails
    assert max(p.invites) == second
    assert p.caller_statuses(call) == [502]  # the destination refused us, not the caller


def test_a_422_to_a_caller_that_asked_for_too_little_keeps_the_call_going() -> None:
    p = peers()
    call = p.arrive(Dial((DESK,), ring_timeout=20), headers=TIMER_CALLER)
    (first,) = p.resolve()
    p.reply(first, 422, headers=(("Min-SE", "120"),))
    second = max(p.invites)
    p.reply(second, 200, headers=(("Session-Expires", "120;refresher=uac"),))
    assert call.state is CallState.ANSWERED
    assert our_200(p, call).headers.get("Session-Expires") == "120;refresher=uac"


def test_allow_of_our_200_follows_what_the_destination_takes() -> None:
    p = peers()
    call, _ref = connect(p, TIMER_CALLER, (*TIMER_PBX, ("Allow", "INVITE, ACK, BYE, INFO")))
    allow = our_200(p, call).headers.get_all("Allow")
    assert "INFO" in allow and "UPDATE" not in allow and "OPTIONS" in allow


# -- refreshes and expiry --------------------------------------------------------------------


def test_refreshed_by_re_invite_the_call_outlives_its_interval() -> None:
    p = peers()
    call, ref = connect(p)
    carrier = p.carrier_dialog(call)
    for _ in range(4):
        p.advance(45)
        relayed, answer = refresh(p, carrier)
        assert relayed.headers.get("Session-Expires") == "90;refresher=uac"
        assert "timer" in relayed.headers.get_all("Supported")
        assert answer.status == 200 and answer.headers.get("Session-Expires") == "90;refresher=uac"
    assert p.now == 180 and call.state is CallState.ANSWERED
    assert byes(p, call, ref) == (0, 0) and ended(p) == []
    p.advance(59)
    assert byes(p, call, ref) == (0, 0)
    p.advance(2)  # 60 s after the last refresh: 90 - min(32, 90 / 3), before it expires
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "session expired")]
    assert [(f.hangup_by, f.reason) for f in p.finished] == [("system", "session expired")]
    assert p.controller.calls == {} and p.timers == {}


def test_without_a_refresh_both_legs_get_bye_before_the_session_expires() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(59.9)
    assert byes(p, call, ref) == (0, 0)
    p.advance(0.2)
    caller_bye, pbx_bye = p.byes_to(call.sip_call_id), p.byes_to(p.invites[ref].request.call_id)
    assert len(caller_bye) == 1 and caller_bye[0].to.tag == "carrier"
    assert len(pbx_bye) == 1 and pbx_bye[0].to.tag == "pbx"
    assert ended(p) == [("answered", "system", "session expired")]


def test_an_update_from_the_destination_refreshes_too() -> None:
    p = peers()
    call, ref = connect(p)
    pbx = p.pbx_dialog(ref)
    p.advance(50)
    relayed, answer = refresh(p, pbx, "UPDATE")
    assert relayed.call_id == call.sip_call_id  # it went to the caller's leg
    assert answer.status == 200
    p.advance(50)  # 100 s after the answer, 50 after the UPDATE
    assert byes(p, call, ref) == (0, 0) and call.state is CallState.ANSWERED
    p.advance(11)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "session expired")]


def test_a_refused_refresh_does_not_restart_the_timer() -> None:
    p = peers()
    call, ref = connect(p)
    p.advance(45)
    _relayed, answer = refresh(p, p.carrier_dialog(call), status=488, answered=())
    assert answer.status == 488
    p.advance(16)  # 61 s after the answer: the refused refresh did not count
    assert byes(p, call, ref) == (1, 1)


def test_a_refresh_that_drops_the_timer_puts_the_call_under_the_ceiling() -> None:
    """A re-INVITE from a sender without timers answered without one: RFC 4028 has no timer on
    the dialog any more, so the ceiling counts from the answer."""
    p = peers(max_call_seconds=600)
    call, ref = connect(p, (), (("Session-Expires", "1800;refresher=uas"),))
    p.advance(100)
    request = p.carrier_dialog(call).request("INVITE", b"v=0\r\n")  # hold: no timer fields
    p.feed(InDialogRequest("hold", request))
    relayed = p.requests[-1]
    assert relayed.ref is not None and "session-expires" not in relayed.request.headers
    tag = relayed.request.to.tag or ""
    p.feed(Responded(relayed.ref, answer_to(relayed.request, 200, tag, "sip:pbx@203.0.113.9")))
    assert call.session is None and {k.kind for k in p.timers} == {"ceiling", "keepalive"}
    p.advance(499)
    assert byes(p, call, ref) == (0, 0)
    p.advance(2)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "max call seconds")]


# -- the ceiling -----------------------------------------------------------------------------


def test_the_ceiling_ends_a_call_without_a_session_timer() -> None:
    p = peers(session_expires=0, max_call_seconds=3600)
    call, ref = connect(p, (), ())
    assert "session-expires" not in p.invites[ref].request.headers  # nothing asked
    assert "session-expires" not in our_200(p, call).headers
    p.advance(3599)
    assert byes(p, call, ref) == (0, 0) and ended(p) == []
    p.advance(2)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "max call seconds")]
    assert p.timers == {} and p.controller.calls == {}


def test_no_ceiling_leaves_a_call_without_a_timer_up() -> None:
    p = peers(session_expires=0, max_call_seconds=0, dialog_keepalive_seconds=0)
    call, ref = connect(p, (), ())
    assert p.timers == {}
    p.advance(100_000)
    assert byes(p, call, ref) == (0, 0) and call.state is CallState.ANSWERED


def test_a_shorter_max_duration_wins_over_the_ceiling() -> None:
    p = peers(session_expires=0, max_call_seconds=3600)
    call, ref = connect(p, (), (), SetDuration(120))
    p.advance(121)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "max duration")]
    p.advance(3600)
    assert byes(p, call, ref) == (1, 1) and len(ended(p)) == 1


def test_a_longer_max_duration_loses_to_the_ceiling() -> None:
    p = peers(session_expires=0, max_call_seconds=600)
    call, ref = connect(p, (), (), SetDuration(7200))
    p.advance(601)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "max call seconds")]


# -- hostile or odd intervals ----------------------------------------------------------------


def test_an_interval_below_90_s_in_a_2xx_is_held_to_90() -> None:
    p = peers()
    call, ref = connect(p, TIMER_CALLER, (("Session-Expires", "1;refresher=uac"),))
    assert our_200(p, call).headers.get("Session-Expires") == "90;refresher=uac"
    p.advance(59)
    assert byes(p, call, ref) == (0, 0)


def test_an_unreadable_interval_in_a_2xx_counts_as_none() -> None:
    p = peers(max_call_seconds=600)
    call, _ref = connect(p, (), (("Session-Expires", "soon"),))
    assert call.session is None and {k.kind for k in p.timers} == {"ceiling", "keepalive"}
    p.advance(601)
    assert ended(p) == [("answered", "system", "max call seconds")]


def test_an_interval_longer_than_the_ceiling_keeps_the_ceiling_armed() -> None:
    p = peers(max_call_seconds=600)
    call, ref = connect(p, TIMER_CALLER, (("Session-Expires", "86400;refresher=uac"),))
    assert {k.kind for k in p.timers} == {"session", "ceiling"}
    p.advance(601)
    assert byes(p, call, ref) == (1, 1)
    assert ended(p) == [("answered", "system", "max call seconds")]
