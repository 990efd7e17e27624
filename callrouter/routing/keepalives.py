"""Dialog keepalives in the call controller: an answered call without a session timer sends an
in-dialog OPTIONS on each leg every ``dialog_keepalive_seconds``, so a peer that lost the call
without a word (a PBX rebooted, a carrier crashed, a BYE lost) ends it within an interval or
two instead of at ``max_call_seconds`` (Kamailio's ``dlg_ka``, an SBC's "SIP ping").

Rules of this file:
- RFC 3261 §11 allows OPTIONS inside a dialog and it changes nothing of the session; it takes
  the leg's next CSeq like any request we send in the dialog (§12.2.1.1).
- Any final answer but 481 and 408 proves the peer still holds the dialog: 200, and also 405
  or 501 from a peer that does not take OPTIONS (it had to find the dialog to say so).
- 481 (RFC 5057 §5.1: the dialog is gone at the peer) ends the call: BYE to the other leg only,
  since the leg that answered has nothing left to hang up. 408, or no answer at all (Timer F),
  ends it with BYE on both legs, as RFC 4028 §10 does when a session expires: a peer that only
  lost its way back may still hear the BYE.
- One OPTIONS at a time per leg: while one waits for Timer F, the next interval sends none on
  that leg, so a dead peer costs two transactions per call, never a pile of them.
- A leg through a trunk with ``keepalives`` off gets none: a carrier that wrongly answers 481
  to an OPTIONS it does not handle would otherwise have every call cut (the other leg still
  gets them).
- What each OPTIONS did is reported as data (``ObserveKeepalive``: sent, then its outcome);
  the adapter counts it. An answer that comes after the call ended reports nothing: it
  decided nothing.
- A call with a session timer gets none (the refreshes prove both ends alive); the timer stops
  when the call ends, with every other timer of the call (call_lifecycle.py).
"""

from __future__ import annotations

from callrouter.routing.actions import ObserveKeepalive
from callrouter.routing.call import Call, Probe
from callrouter.routing.call_states import CallState
from callrouter.routing.in_dialog import InDialogRelay

__all__ = ["KEEPALIVE_LOST", "KEEPALIVE_UNANSWERED", "DialogKeepalives"]

KEEPALIVE_LOST = "keepalive: the {leg} lost the dialog (481)"
"""The hang-up reason of a call whose keepalive OPTIONS was answered 481 (``leg``: caller or
callee)."""

KEEPALIVE_UNANSWERED = "keepalive: no answer from the {leg}"
"""The hang-up reason of a call whose keepalive OPTIONS got 408 or no answer at all."""


def _leg(to_caller: bool) -> str:
    return "caller" if to_caller else "callee"


def _outcome(status: int) -> str:
    """What a keepalive's final answer did, as ``ObserveKeepalive`` names it."""
    if 200 <= status < 300:
        return "answered"
    if status == 481:
        return "lost"
    if status == 408:
        return "no_answer"
    return "other"


class DialogKeepalives(InDialogRelay):
    """The controller's dialog keepalives: OPTIONS on both legs, and what their answers mean."""

    def _keepalive_due(self, call: Call) -> None:
        """The interval passed: OPTIONS on each leg that has none unanswered, and the next."""
        if call.state is not CallState.ANSWERED or call.session is not None:
            return
        callee = call.callee.dialog if call.callee is not None else None
        for to_caller, dialog in ((True, call.caller), (False, callee)):
            if dialog is None or self._probing(call, to_caller):
                continue
            trunk = call.trunk if to_caller else call.callee.trunk if call.callee else None
            if trunk is not None and not trunk.keepalives:
                continue  # a carrier that answers 481 to OPTIONS it does not handle
            options = dialog.request("OPTIONS")
            options.headers.add("Accept", "application/sdp")  # §11.1: SHOULD name what we take
            flow = self._dialog_flow(call, dialog, self._leg_flow(call, to_caller=to_caller))
            self._send(options, flow, (call, Probe(to_caller)))
            self._emit(ObserveKeepalive(_leg(to_caller)))
        self._start_timer(call, "keepalive", self.dialog_keepalive_seconds)

    def _probing(self, call: Call, to_caller: bool) -> bool:
        """Whether the leg has a keepalive OPTIONS waiting for its answer."""
        for ref in call.refs:
            target = self._refs[ref][1]
            if isinstance(target, Probe) and target.to_caller == to_caller:
                return True
        return False

    def _probe_answered(self, call: Call, probe: Probe, status: int) -> None:
        """A keepalive's final answer (408 for Timer F): the call goes on, or ends."""
        if call.state is not CallState.ANSWERED:
            return
        leg = _leg(probe.to_caller)
        self._emit(ObserveKeepalive(leg, _outcome(status)))
        if status == 481:
            if probe.to_caller:
                if call.callee is not None:
                    self._bye(call, call.callee.dialog, call.callee.flow)
            else:
                self._bye(call, call.caller, call.flow)
            self._end(call, "answered", "system", KEEPALIVE_LOST.format(leg=leg))
        elif status == 408:
            self._hang_up(call, KEEPALIVE_UNANSWERED.format(leg=leg))
