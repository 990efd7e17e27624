"""What an answered call holds while it is up, for Python's cyclic garbage collector.

A node with thousands of calls up (6,000 at 100 calls/s of 60 s calls) has every object those
calls hold walked by each full collection. Once the caller has ACKed our 2xx, the call lets go
of the caller's parsed INVITE and of the parses kept in our INVITE to the destination, and it
still answers everything an answered call is asked (a 2xx sent again, a second 2xx from a
downstream fork, re-INVITE, BYE).
"""

from __future__ import annotations

import gc

from callrouter.routing.call import Call
from callrouter.routing.call_states import CallState
from callrouter.routing.dialplan import Dial
from callrouter.sip.headers import parse_name_address
from callrouter.sip.uri import parse_uri
from tests.tracked import reachable

from .call_peers import Peers

DESK = "sip:desk@203.0.113.9:5070"

HELD_PER_CALL = 28
"""Tracked objects an answered, ACKed call holds at most. Measured here: 25 (the Call, its
Branch and Flow, two Dialogs, our INVITE to the destination without its parses, two timer
keys, the call's lists and sets, the controller's entries); 49 before the call let the
caller's INVITE and those parses go and the dialogs' route sets became tuples.
bench/call_controller.py --up counts the B2BUA's timers too (one object each,
tests/routing/test_call_timers.py)."""


def answered(peers: Peers, n: int) -> tuple[Call, int]:
    """Call ``n`` answered by the PBX and ACKed by the carrier."""
    call = peers.arrive(Dial((DESK,), ring_timeout=20), call_number=n)
    (ref,) = peers.resolve()
    peers.reply(ref, 180)
    peers.reply(ref, 200)
    peers.carrier_acks(call)
    assert call.state is CallState.ANSWERED
    return call, ref


def held(peers: Peers) -> int:
    """Tracked objects the controller holds, without what serve shares between calls (the
    number, from the pool; the trunk, from the configuration; the parse caches, bounded)."""
    parse_uri.cache_clear()
    parse_name_address.cache_clear()
    gc.collect()  # tuples of text held since the last one are untracked by it, as in serve
    shared = set()
    for call in peers.controller.calls.values():
        for root in (call.number, call.trunk):
            shared |= {id(root), *(id(item) for item in reachable(root))}
    return sum(1 for item in reachable(peers.controller) if id(item) not in shared)


def test_an_answered_acked_call_holds_few_tracked_objects() -> None:
    peers = Peers()
    for n in range(1, 11):
        answered(peers, n)  # first-use allocations and the shared number, trunk, enums
    before = held(peers)
    calls = 50
    for n in range(11, 11 + calls):
        answered(peers, n)
    per_call = (held(peers) - before) / calls
    assert per_call <= HELD_PER_CALL, per_call


def test_the_callers_invite_is_let_go_once_acked_and_ours_keeps_no_parses() -> None:
    peers = Peers()
    call = peers.arrive(Dial((DESK,), ring_timeout=20))
    invite = peers.carrier_invites[call.tid]
    (ref,) = peers.resolve()
    peers.reply(ref, 200)
    # Held until the caller ACKs our 2xx, let go with the 2xx's repetition.
    assert peers.controller.calls[call.tid].request is invite
    peers.carrier_acks(call)
    assert call.request is None and call.sip_call_id == invite.call_id
    kept = list(reachable(peers.controller))
    assert all(item is not invite for item in kept)
    # Our INVITE to the destination stays, as text: its parses are made again if asked for.
    assert {"Request", "Headers"} <= {type(item).__name__ for item in kept}
    assert {type(item).__name__ for item in kept}.isdisjoint({"Via", "NameAddress", "CSeq"})


def test_after_the_ack_a_2xx_again_and_a_second_forks_2xx_are_still_acked() -> None:
    peers = Peers()
    call, ref = answered(peers, 1)
    outbound = peers.invites[ref].request
    acks = len(peers.acks())
    peers.reply(ref, 200, "pbx")  # our ACK was lost
    peers.reply(ref, 200, "pbx-fork")  # a downstream fork answered too
    again, fork = peers.acks()[acks:]
    assert (again.cseq.number, again.to.tag) == (outbound.cseq.number, "pbx")
    assert (fork.cseq.number, fork.to.tag) == (outbound.cseq.number, "pbx-fork")
    assert again.call_id == fork.call_id == outbound.call_id
    (bye,) = peers.byes_to(outbound.call_id)
    assert bye.to.tag == "pbx-fork"  # the fork is hung up, the call stays up
    assert call.state is CallState.ANSWERED and peers.ends() == []


def test_an_answered_call_still_ends_with_bye_on_both_legs() -> None:
    peers = Peers()
    call, ref = answered(peers, 1)
    peers.in_dialog(peers.carrier_dialog(call), "BYE", "carrier-bye")
    assert [r.status for r in peers.answers["carrier-bye"]] == [200]
    (bye,) = peers.byes_to(peers.invites[ref].request.call_id)
    assert bye.to.tag == "pbx"
    (ended,) = peers.ends()
    assert (ended.disposition, ended.hangup_by) == ("answered", "caller")
