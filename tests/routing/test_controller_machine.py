"""Random interleavings of everything the carrier, the PBXs and the clock can do to one call, on
the in-memory peers: every call reaches an end, no leg is left up when the other is gone, and
the journal hears exactly one CallStarted and one CallEnded. The caller asks for a session timer
or does not do them, and refreshes come or not, so an answered call always has its end armed:
the session timer, or the ceiling and the dialog keepalive for a call left without one; the
peers answer its OPTIONS, refuse them, lose the dialog (481) or never answer."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from callrouter.routing.actions import SendRequest
from callrouter.routing.call_states import CallState
from callrouter.routing.controller import Controller
from callrouter.routing.dialplan import Dial
from callrouter.routing.events import CallerCancelled, InDialogRequest, Responded
from callrouter.sip.dialogs import Dialog
from callrouter.sip.events import Flow
from callrouter.sip.transactions import Timers

from .call_peers import Local, Peers

FLOWS = [Flow("udp", "203.0.113.20", 5060), Flow("udp", "203.0.113.21", 5060)]
STATUSES = [100, 180, 183, 200, 404, 422, 480, 486, 487, 503, 603]
KEEPALIVE_STATUSES = [200, 405, 501, 481, 408, None]
"""A peer's answer to our keepalive OPTIONS (None: none at all, Timer F)."""
TIMERS = [None, "90;refresher=uac", "120;refresher=uas"]
"""A 2xx's or a refresh's Session-Expires (None: the peer does not do timers)."""


class OneCall(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        controller = Controller(
            Local(), Timers(), max_call_seconds=300, dialog_keepalive_seconds=10
        )
        self.peers = Peers(controller=controller)
        self.final: dict[int, int] = {}
        """Refs whose INVITE got a final answer (or timed out: 408), with the status."""
        self.answered: dict[int, str] = {}
        """Refs the PBX answered 2xx, with the Call-ID of the leg that made."""
        self.hung_up: set[str] = set()
        """Call-IDs of legs the peers ended with a BYE of their own."""
        self.seen_ended = False

    @initialize(start=st.sampled_from(["ringing", "ringing without timers", "no timer", "timer"]))
    def caller_calls(self, start: str) -> None:
        """A carrier that asks for a session timer, or one that does not do them (the call then
        has one only if the PBX takes the interval we ask for). Half the runs start with the
        call answered, with a session timer or without one (the keepalives watch it), so that
        what befalls a connected call over minutes (refreshes, keepalives, peers that vanish)
        is reached, not only dialling."""
        timers = start in ("ringing", "timer")
        self.call = self.peers.arrive(
            Dial(("sip:desk@203.0.113.9", "sip:mobile@203.0.113.10"), ring_timeout=20),
            Dial(("sip:voicemail@203.0.113.11",), ring_timeout=20, continue_on=frozenset()),
            headers=(("Supported", "timer"), ("Session-Expires", "90;refresher=uac"))
            if timers
            else (),
        )
        if start in ("no timer", "timer"):
            first = self.peers.resolve(FLOWS[0])[0]
            headers = (("Session-Expires", "90;refresher=uac"),) if timers else ()
            self.peers.reply(first, 200, tag=f"pbx{first}", headers=headers)
            self.final[first] = 200
            self.answered[first] = self.peers.invites[first].request.call_id
            self.peers.carrier_acks(self.call)

    # -- what the peers can read -----------------------------------------------------------------

    def open_refs(self) -> list[int]:
        return [r for r in self.peers.invites if r not in self.final]

    def ended(self) -> bool:
        return bool(self.peers.ends())

    def legs_up(self) -> tuple[bool, list[str]]:
        """(the caller's leg is up, the Call-IDs of destination legs up)."""
        byes = {s.request.call_id for s in self.peers.sent("BYE")} | self.hung_up
        caller = self.call.sip_call_id
        caller_up = 200 in self.peers.caller_statuses(self.call) and caller not in byes
        return caller_up, [cid for cid in self.answered.values() if cid not in byes]

    def probes(self) -> list[SendRequest]:
        """Our keepalive OPTIONS still waiting for an answer."""
        return [
            s
            for s in self.peers.sent("OPTIONS")
            if s.ref is not None and self.peers.controller.waits_for(s.ref)
        ]

    def callee_ref(self) -> int | None:
        callee = self.call.callee
        return callee.ref if callee is not None and self.call.state is CallState.ANSWERED else None

    # -- rules -----------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.peers.resolving))
    @rule(flows=st.integers(1, 2))
    def resolve(self, flows: int) -> None:
        self.peers.resolve(*FLOWS[:flows])

    @precondition(lambda self: bool(self.open_refs()))
    @rule(data=st.data(), status=st.sampled_from(STATUSES), timer=st.sampled_from(TIMERS))
    def pbx_answers(self, data: st.DataObject, status: int, timer: str | None) -> None:
        ref = data.draw(st.sampled_from(self.open_refs()))
        if ref in self.peers.cancels and status >= 200:
            status = data.draw(st.sampled_from([200, 487]))  # a CANCEL's outcomes
        headers = (("Session-Expires", timer),) if timer and status == 200 else ()
        body = b"v=0\r\n" if status == 183 else b""
        self.peers.reply(ref, status, tag=f"pbx{ref}", body=body, headers=headers)
        if status >= 200:
            self.final[ref] = status
        if 200 <= status < 300:
            self.answered[ref] = self.peers.invites[ref].request.call_id

    @precondition(lambda self: bool(self.answered))
    @rule(data=st.data())
    def pbx_repeats_its_2xx(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.answered)))
        self.peers.reply(ref, 200, tag=f"pbx{ref}")

    @precondition(lambda self: bool(self.open_refs()))
    @rule(data=st.data())
    def invite_times_out(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(self.open_refs()))
        self.peers.time_out(ref)
        self.final[ref] = 408

    @precondition(lambda self: not self.ended() and self.call.state is CallState.ROUTING)
    @rule()
    def caller_cancels(self) -> None:
        self.peers.feed(CallerCancelled(self.call.tid))

    @precondition(lambda self: self.call.repeater is not None)
    @rule()
    def caller_acks(self) -> None:
        self.peers.carrier_acks(self.call)

    @precondition(lambda self: self.callee_ref() is not None)
    @rule(from_caller=st.booleans())
    def bye(self, from_caller: bool) -> None:
        dialog, tid = self.dialog(from_caller)
        self.peers.in_dialog(dialog, "BYE", tid)
        if [r.status for r in self.peers.answers[tid]] == [200]:
            self.hung_up.add(dialog.call_id)

    @precondition(lambda self: self.callee_ref() is not None)
    @rule(
        from_caller=st.booleans(),
        method=st.sampled_from(["INVITE", "UPDATE"]),
        status=st.sampled_from([200, 488, None]),
        timer=st.sampled_from(TIMERS),
    )
    def refresh(
        self, from_caller: bool, method: str, status: int | None, timer: str | None
    ) -> None:
        """A re-INVITE or UPDATE (a session refresh when it carries a timer), relayed, and
        answered, refused or never answered on the other leg."""
        dialog, _tid = self.dialog(from_caller)
        request = dialog.request(method, b"v=0\r\n")
        if timer:
            request.headers.add("Supported", "timer")
            request.headers.add("Session-Expires", timer)
        self.peers.feed(InDialogRequest(f"refresh-{len(self.peers.requests)}", request))
        relayed = self.peers.requests[-1]
        if relayed.ref is None:
            return
        if status is None:
            self.peers.time_out(relayed.ref)
        else:
            peer_tag = relayed.request.to.tag
            response = relayed.request.response(status, to_tag=peer_tag)
            if timer and status == 200:
                response.headers.add("Session-Expires", timer)
            self.peers.feed(Responded(relayed.ref, response))

    @precondition(lambda self: bool(self.probes()))
    @rule(data=st.data(), status=st.sampled_from(KEEPALIVE_STATUSES))
    def peer_answers_keepalive(self, data: st.DataObject, status: int | None) -> None:
        probe = data.draw(st.sampled_from(self.probes()))
        assert probe.ref is not None
        if status is None:
            self.peers.time_out(probe.ref)
            return
        response = probe.request.response(status, to_tag=probe.request.to.tag)
        self.peers.feed(Responded(probe.ref, response))
        if status == 481:
            self.hung_up.add(probe.request.call_id)  # that peer holds the leg no more

    @precondition(lambda self: self.callee_ref() is not None and self.call.session is None)
    @rule()
    def a_keepalive_interval_passes(self) -> None:
        """Time moves on a call the keepalives watch (so their answers are reached often)."""
        self.peers.advance(self.peers.controller.dialog_keepalive_seconds)

    @rule(seconds=st.floats(0.1, 40))
    def time_passes(self, seconds: float) -> None:
        self.peers.advance(seconds)

    def dialog(self, from_caller: bool) -> tuple[Dialog, str]:
        n = len(self.peers.requests)
        if from_caller:
            return self.peers.carrier_dialog(self.call), f"carrier-{n}"
        ref = self.callee_ref()
        assert ref is not None
        return self.peers.pbx_dialog(ref, f"pbx{ref}"), f"pbx-{n}"

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def one_start_at_most_one_end(self) -> None:
        assert len(self.peers.starts()) == 1
        assert len(self.peers.ends()) <= 1
        assert len(self.peers.finished) == len(self.peers.ends())

    @invariant()
    def no_leg_is_up_without_the_other(self) -> None:
        caller_up, callee_up = self.legs_up()
        if self.ended():
            assert not caller_up and callee_up == []
            assert self.peers.controller.calls == {}
        elif self.call.state is CallState.ANSWERED:
            assert callee_up == [self.peers.invites[self.callee_ref() or 0].request.call_id]
        else:
            assert not caller_up and callee_up == []

    @invariant()
    def an_answered_call_has_its_end_armed(self) -> None:
        if self.call.state is CallState.ANSWERED:
            kinds = {k.kind for k in self.peers.timers}
            assert "session" in kinds or "ceiling" in kinds
            if self.call.session is None:
                assert "keepalive" in kinds  # a peer gone without a BYE is found

    def teardown(self) -> None:
        """Let every peer finish: the call ends, every leg is down, nothing is left waiting."""
        for _ in range(50):
            if self.ended() and not self.open_refs():
                break
            if self.peers.resolving:
                self.resolve(1)
            for ref in self.open_refs():
                self.peers.reply(ref, 487, tag=f"pbx{ref}")
                self.final[ref] = 487
            if self.callee_ref() is not None and not self.ended():
                self.bye(from_caller=True)
            self.peers.advance(60)
        assert self.ended() and not self.open_refs()
        self.one_start_at_most_one_end()
        self.no_leg_is_up_without_the_other()
        assert not any(self.peers.controller.waits_for(ref) for ref in self.peers.invites)
        assert self.peers.timers == {}


TestOneCall = OneCall.TestCase
TestOneCall.settings = settings(
    max_examples=400,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
