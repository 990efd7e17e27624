"""The states of a call and of each of its outbound branches, and every transition, as data.

Rules of this file:
- A call is ROUTING (its dialplan runs, branches ring), then ANSWERED (one branch won, both legs
  are up), then ENDED. Nothing leaves ENDED.
- A branch is one outbound attempt: RESOLVING (RFC 3263 look-up, media ports binding), then
  CALLING (INVITE sent to a target, nothing heard), TRYING (100 heard: the target lives),
  RINGING (18x heard: it rings; no more failover), and one of the finals: ANSWERED (its 2xx
  won), FAILED (a final failure, a timeout, or no target left) or CANCELLED (we gave it up).
- CANCEL_OWED is a cancelled branch that has heard no provisional response yet: §9.1 forbids
  a CANCEL before one, so the CANCEL leaves with the first 18x (or never, when a final comes).
- A (state, input) pair missing from a table changes nothing: the input is late or repeated
  (a 180 after the 200, a 487 after we gave up) and the controller ignores it, or answers it
  without changing state (a late 2xx is ACKed and hung up).
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "BRANCH_TRANSITIONS",
    "CALL_TRANSITIONS",
    "BranchInput",
    "BranchState",
    "CallInput",
    "CallState",
    "next_branch_state",
    "next_call_state",
]


class CallState(Enum):
    ROUTING = "routing"
    ANSWERED = "answered"
    ENDED = "ended"


class CallInput(Enum):
    BRANCH_ANSWERED = "a branch's 2xx won"
    ENDED = "the call ended (CANCEL, BYE, failure, timeout, shutdown)"


CALL_TRANSITIONS: dict[tuple[CallState, CallInput], CallState] = {
    (CallState.ROUTING, CallInput.BRANCH_ANSWERED): CallState.ANSWERED,
    (CallState.ROUTING, CallInput.ENDED): CallState.ENDED,
    (CallState.ANSWERED, CallInput.ENDED): CallState.ENDED,
}


class BranchState(Enum):
    RESOLVING = "resolving"
    CALLING = "calling"
    TRYING = "trying"
    RINGING = "ringing"
    CANCEL_OWED = "cancel owed"
    ANSWERED = "answered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """Whether the attempt is over for the call (its AttemptEnded is recorded)."""
        return self in _DONE


_DONE = frozenset(
    {BranchState.CANCEL_OWED, BranchState.ANSWERED, BranchState.FAILED, BranchState.CANCELLED}
)


class BranchInput(Enum):
    SENT = "INVITE sent to a target"
    TRYING = "100 Trying"
    PROVISIONAL = "18x"
    SUCCESS = "2xx"
    FAILURE = "final failure, timeout, or no target to send to"
    FAILOVER = "503, timeout or silence with a target left: the next target"
    CANCEL = "the call no longer wants this branch"


_LIVE = (BranchState.CALLING, BranchState.TRYING)

BRANCH_TRANSITIONS: dict[tuple[BranchState, BranchInput], BranchState] = {
    (BranchState.RESOLVING, BranchInput.SENT): BranchState.CALLING,
    (BranchState.RESOLVING, BranchInput.FAILURE): BranchState.FAILED,
    (BranchState.RESOLVING, BranchInput.CANCEL): BranchState.CANCELLED,
    **{(s, BranchInput.TRYING): BranchState.TRYING for s in _LIVE},
    **{(s, BranchInput.FAILOVER): BranchState.CALLING for s in _LIVE},
    **{(s, BranchInput.CANCEL): BranchState.CANCEL_OWED for s in _LIVE},
    **{(s, BranchInput.PROVISIONAL): BranchState.RINGING for s in (*_LIVE, BranchState.RINGING)},
    **{(s, BranchInput.SUCCESS): BranchState.ANSWERED for s in (*_LIVE, BranchState.RINGING)},
    **{(s, BranchInput.FAILURE): BranchState.FAILED for s in (*_LIVE, BranchState.RINGING)},
    (BranchState.RINGING, BranchInput.CANCEL): BranchState.CANCELLED,
    # The CANCEL owed leaves with the first 18x; a final answer settles it without one.
    (BranchState.CANCEL_OWED, BranchInput.PROVISIONAL): BranchState.CANCELLED,
    (BranchState.CANCEL_OWED, BranchInput.SUCCESS): BranchState.CANCELLED,
    (BranchState.CANCEL_OWED, BranchInput.FAILURE): BranchState.CANCELLED,
}


def next_call_state(state: CallState, event: CallInput) -> CallState:
    return CALL_TRANSITIONS.get((state, event), state)


def next_branch_state(state: BranchState, event: BranchInput) -> BranchState:
    return BRANCH_TRANSITIONS.get((state, event), state)
