"""Dialogs from both ends (§12) and the UAS 2xx retransmission schedule (§13.3.1.4)."""

from __future__ import annotations

from callrouter.sip.dialogs import AnswerRepeater, Dialog
from callrouter.sip.message import parse_message
from callrouter.sip.transactions import Timers
from tests.sip.messages import invite


def test_uac_and_uas_build_mirror_dialogs_and_in_dialog_requests_route_by_the_route_set() -> None:
    request = invite()
    request.headers.add("Record-Route", "<sip:edge1.example.net;lr>")
    request.headers.add("Record-Route", "<sip:edge2.example.net;lr>")
    uas = Dialog.as_uas(request, "uas-tag", "sip:router@198.51.100.1:5060")
    ok = uas.answer(request, 200, b"v=0\r\n")
    assert ok.headers.get_all("record-route") == [
        "<sip:edge1.example.net;lr>",
        "<sip:edge2.example.net;lr>",
    ]
    uac = Dialog.as_uac(request, ok, "sip:+447700900123@192.0.2.10:5060")
    assert uac.id == (uas.call_id, uas.remote_tag, uas.local_tag)
    assert uac.route_set == ("<sip:edge2.example.net;lr>", "<sip:edge1.example.net;lr>")
    assert uac.remote_target == "sip:router@198.51.100.1:5060"

    bye = uac.request("BYE")
    assert bye.uri == "sip:router@198.51.100.1:5060"
    assert tuple(bye.headers.get_all("route")) == uac.route_set
    assert bye.cseq.number == request.cseq.number + 1
    assert uas.matches(bye) and uac.matches(ok)
    bye.headers.add("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-bye", first=True)  # as sent
    parsed = parse_message(bye.to_bytes())
    assert uas.check(parsed) is None and uas.remote_seq == bye.cseq.number


def test_an_old_cseq_in_the_dialog_gets_500() -> None:
    request = invite(cseq=10)
    uas = Dialog.as_uas(request, "uas-tag", "sip:router@198.51.100.1")
    uac = Dialog.as_uac(request, uas.answer(request, 200), "sip:caller@192.0.2.10")
    uac.local_seq = 3  # a peer that restarted its counter
    refusal = uas.check(uac.request("BYE"))
    assert refusal is not None and refusal.status == 500


def test_ack_for_a_2xx_reuses_the_invite_cseq() -> None:
    request = invite(cseq=5)
    uas = Dialog.as_uas(request, "t", "sip:router@198.51.100.1")
    uac = Dialog.as_uac(request, uas.answer(request, 200), "sip:caller@192.0.2.10")
    ack = uac.request("ACK", cseq=5)
    assert (ack.cseq.number, ack.cseq.method) == (5, "ACK")
    assert uac.request("BYE").cseq.number == 6


def test_a_strict_router_in_the_route_set_becomes_the_request_uri() -> None:
    request = invite()
    request.headers.add("Record-Route", "<sip:old-proxy.example.net>")
    uas = Dialog.as_uas(request, "t", "sip:router@198.51.100.1")
    bye = uas.request("BYE")
    assert bye.uri == "sip:old-proxy.example.net"
    assert bye.headers.get_all("route")[-1] == "<sip:+447700900123@192.0.2.10:5060>"


def test_the_2xx_is_repeated_at_t1_doubling_to_t2_until_acked_or_64_t1() -> None:
    request = invite()
    ok = Dialog.as_uas(request, "t", "sip:r@198.51.100.1").answer(request, 200)
    repeater = AnswerRepeater(ok, Timers(), started=0.0)
    times = []
    for _ in range(40):
        deadline = repeater.deadline
        if deadline is None:
            break
        if repeater.handle_timer(deadline):
            times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert repeater.gave_up

    acked = AnswerRepeater(ok, Timers(), started=0.0)
    acked.handle_timer(0.5)
    acked.ack()
    assert acked.deadline is None and acked.handle_timer(1.5) == []
