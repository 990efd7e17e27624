"""RFC 3261 §17 state machines driven by a fake clock: schedules, losses, absorbed duplicates."""

from __future__ import annotations

from callrouter.sip.events import TransactionTerminated, TransactionTimedOut
from callrouter.sip.message import Request, Response, parse_message
from callrouter.sip.transactions import (
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
    State,
    Timers,
    Transaction,
    Wire,
)
from tests.sip.messages import answer, invite, options

TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0)


def run_until_quiet(tx: Transaction, now: float, limit: int = 100) -> list[tuple[float, object]]:
    """Fire timers in deadline order until none is armed; the sends and events seen, timed."""
    log: list[tuple[float, object]] = []
    for _ in range(limit):
        deadline = tx.deadline
        if deadline is None:
            return log
        now = deadline
        tx.handle_timer(now)
        log += [(now, m) for m in tx.outgoing] + [(now, e) for e in tx.events]
        tx.outgoing.clear()
        tx.events.clear()
    raise AssertionError("timers never settled")


def sent_times(log: list[tuple[float, object]]) -> list[float]:
    return [t for t, item in log if isinstance(item, Request | Response | Wire)]


def test_client_invite_timer_a_doubles_until_timer_b_over_udp() -> None:
    tx = ClientInvite("c1", invite(), reliable=False, timers=TIMERS)
    tx.start(0.0)
    assert len(tx.outgoing) == 1
    tx.outgoing.clear()
    log = run_until_quiet(tx, 0.0)
    # §17.1.1.2: retransmit at T1, then doubling (no T2 cap for INVITE) until B = 64*T1.
    assert sent_times(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [item for _, item in log if not isinstance(item, Request)] == [
        TransactionTimedOut("c1", "INVITE"),
        TransactionTerminated("c1"),
    ]
    assert log[-1][0] == 32.0
    assert tx.state is State.TERMINATED and tx.deadline is None


def test_client_invite_over_tcp_never_retransmits() -> None:
    tx = ClientInvite("c1", invite(), reliable=True, timers=TIMERS)
    tx.start(0.0)
    tx.outgoing.clear()
    log = run_until_quiet(tx, 0.0)
    assert sent_times(log) == []
    assert log[0] == (32.0, TransactionTimedOut("c1", "INVITE"))


def test_client_invite_error_response_is_acked_and_absorbed_for_timer_d() -> None:
    request = invite()
    tx = ClientInvite("c1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.outgoing.clear()
    assert tx.receive_response(answer(request, 180), 0.2) is True
    assert tx.state is State.PROCEEDING and tx.armed_timers == frozenset({"C"})
    busy = answer(request, 486)
    assert tx.receive_response(busy, 1.0) is True
    # Completed keeps only the ACK, serialised once (the same bytes each time it goes).
    (sent,) = tx.outgoing
    assert isinstance(sent, Wire) and sent.status is None
    ack = parse_message(sent.data)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.headers.get("via") == request.headers.get("via")
    assert ack.to.tag == "tt1" and ack.cseq.number == request.cseq.number
    tx.outgoing.clear()
    # A retransmitted 486 is answered with the same ACK and not passed up again.
    assert tx.receive_response(busy, 2.0) is False
    assert tx.outgoing == [sent]
    tx.outgoing.clear()
    log = run_until_quiet(tx, 2.0)
    assert log == [(33.0, TransactionTerminated("c1"))]


def test_client_invite_2xx_waits_in_accepted_for_retransmissions() -> None:
    request = invite()
    tx = ClientInvite("c1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    ok = answer(request, 200)
    assert tx.receive_response(ok, 0.1) is True
    assert tx.state is State.ACCEPTED
    # RFC 6026: each 2xx retransmission goes up, so the TU re-sends its ACK.
    assert tx.receive_response(ok, 0.6) is True
    assert tx.outgoing == [request]  # only the original INVITE; the transaction never ACKs a 2xx
    tx.outgoing.clear()
    assert run_until_quiet(tx, 0.6) == [(32.1, TransactionTerminated("c1"))]


def test_client_non_invite_timer_e_caps_at_t2_and_f_times_out() -> None:
    tx = ClientNonInvite("c2", options(), reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.outgoing.clear()
    log = run_until_quiet(tx, 0.0)
    # §17.1.2.2: E = T1, doubling up to T2 (4 s), until F = 64*T1 = 32 s.
    assert sent_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-2:] == [
        (32.0, TransactionTimedOut("c2", "OPTIONS")),
        (32.0, TransactionTerminated("c2")),
    ]


def test_client_non_invite_in_proceeding_retransmits_every_t2_then_k() -> None:
    request = options()
    tx = ClientNonInvite("c2", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.outgoing.clear()
    tx.handle_timer(0.5)
    assert tx.receive_response(answer(request, 100), 0.6) is True
    tx.outgoing.clear()
    tx.handle_timer(1.5)  # E was armed for 1.5 in Trying; from Proceeding it becomes T2
    assert tx.deadline == 5.5
    assert tx.receive_response(answer(request, 200), 2.0) is True
    assert tx.receive_response(answer(request, 200), 2.1) is False
    tx.outgoing.clear()
    assert run_until_quiet(tx, 2.1) == [(7.0, TransactionTerminated("c2"))]  # K = T4


def test_server_invite_sends_100_and_answers_retransmissions_with_the_last_response() -> None:
    request = invite()
    tx = ServerInvite("s1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    (trying,) = tx.outgoing
    assert isinstance(trying, Response) and trying.status == 100
    tx.outgoing.clear()
    tx.receive_request(request, 0.3)
    assert tx.outgoing == [trying]
    tx.outgoing.clear()
    ringing = answer(request, 180)
    tx.respond(ringing, 0.4)
    tx.receive_request(request, 0.5)
    assert tx.outgoing == [ringing, ringing]


def test_server_invite_error_is_retransmitted_by_g_until_ack_then_i() -> None:
    request = invite()
    tx = ServerInvite("s1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.outgoing.clear()
    busy = answer(request, 486)
    tx.respond(busy, 1.0)
    tx.outgoing.clear()
    # G: T1, doubling, capped at T2: 1.5, 2.5, 4.5, 8.5 ... ACK arrives at 9.0 (two were lost).
    sends = []
    for _ in range(4):
        deadline = tx.deadline
        assert deadline is not None
        tx.handle_timer(deadline)
        sends.append(deadline)
    assert sends == [1.5, 2.5, 4.5, 8.5]
    assert len(tx.outgoing) == 4
    ack = Request("ACK", request.uri, request.headers.copy())
    tx.receive_request(ack, 9.0)
    assert tx.state is State.CONFIRMED and tx.armed_timers == frozenset({"I"})
    tx.outgoing.clear()
    tx.events.clear()
    assert run_until_quiet(tx, 9.0) == [(14.0, TransactionTerminated("s1"))]


def test_server_invite_without_ack_gives_up_at_timer_h() -> None:
    request = invite()
    tx = ServerInvite("s1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.respond(answer(request, 404), 0.0)
    tx.outgoing.clear()
    log = run_until_quiet(tx, 0.0)
    assert sent_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [e for _, e in log if not isinstance(e, Response | Wire)] == [
        TransactionTimedOut("s1", "INVITE"),
        TransactionTerminated("s1"),
    ]


def test_server_invite_2xx_moves_to_accepted_and_absorbs_the_invite() -> None:
    request = invite()
    tx = ServerInvite("s1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.outgoing.clear()
    ok = answer(request, 200)
    tx.respond(ok, 1.0)
    tx.outgoing.clear()
    tx.receive_request(request, 1.2)
    assert tx.outgoing == []
    assert run_until_quiet(tx, 1.2) == [(33.0, TransactionTerminated("s1"))]  # L = 64*T1


def test_server_non_invite_absorbs_until_answered_then_repeats_for_timer_j() -> None:
    request = options()
    tx = ServerNonInvite("s2", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.receive_request(request, 0.5)
    assert tx.outgoing == []
    ok = answer(request, 200)
    tx.respond(ok, 0.6)
    tx.receive_request(request, 1.0)
    # Completed keeps only the final's bytes: the ones sent first, sent again.
    assert tx.outgoing == [Wire(ok.to_bytes(), 200)] * 2
    tx.outgoing.clear()
    assert run_until_quiet(tx, 1.0) == [(32.6, TransactionTerminated("s2"))]


def test_server_non_invite_over_tcp_ends_at_once() -> None:
    request = options()
    tx = ServerNonInvite("s2", request, reliable=True, timers=TIMERS)
    tx.start(0.0)
    tx.respond(answer(request, 200), 0.6)
    assert run_until_quiet(tx, 0.6)[-1] == (0.6, TransactionTerminated("s2"))


def test_client_invite_that_rings_forever_gives_up_at_timer_c() -> None:
    request = invite()
    tx = ClientInvite("c1", request, reliable=False, timers=TIMERS)
    tx.start(0.0)
    tx.receive_response(answer(request, 180), 1.0)
    tx.receive_response(answer(request, 183), 100.0)  # each provisional restarts C
    tx.outgoing.clear()
    assert run_until_quiet(tx, 100.0) == [
        (280.0, TransactionTimedOut("c1", "INVITE")),
        (280.0, TransactionTerminated("c1")),
    ]
