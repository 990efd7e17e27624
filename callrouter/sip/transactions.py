"""The four transaction state machines of RFC 3261 §17 (with the Accepted state of RFC 6026).

Rules of this file:
- A transaction is fed inputs (a message from the peer, a message from the layer above, a timer
  tick) together with ``now``; it never reads a clock and never sends. What it wants sent lands
  in ``outgoing`` and what the layer above must learn lands in ``events``; the endpoint drains both.
- Each machine is a table: (state, input) -> handler. Inputs from the peer that are not in the
  table are absorbed (a late provisional after a final response, a stray ACK); inputs from the
  layer above that are not in the table are our own misuse and raise ``LocalError``.
- Timers keep the RFC's letters. Over reliable transports retransmission timers are never armed
  and the wait timers D, I, J, K are zero (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
- Terminated holds no timer: ``deadline`` is None from then on.
- A state that only waits out a timer (Completed and Accepted, Confirmed) keeps what it may still
  send, serialised once as a ``Wire``, and lets the parsed request and responses go: thousands of
  transactions wait at once under load, and a full garbage collection walks every object each
  one holds (29-36 with their messages, 4-5 without: bench/waiting_transactions.py).
- A transport failure (a connection refused, a TLS peer whose certificate fails verification)
  ends a client transaction still waiting for its final response at once, handing the layer
  above a 503 made here: §8.1.3.1 and §17.1.4 (the "Transport Err." arcs of Figures 5, 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from callrouter.sip.errors import LocalError
from callrouter.sip.events import TransactionTerminated, TransactionTimedOut
from callrouter.sip.headers import Headers, canonical_name
from callrouter.sip.message import Message, Request, Response

__all__ = [
    "ClientInvite",
    "ClientNonInvite",
    "ServerInvite",
    "ServerNonInvite",
    "State",
    "Timers",
    "Transaction",
    "Wire",
    "ack_for",
]


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer base values in seconds (§17.1.1.1, Table 4)."""

    t1: float = 0.5
    """Round-trip time estimate."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum time a message stays in the network."""
    c: float = 180.0
    """Timer C (§16.6 item 11, more than 3 minutes in a proxy): how long an INVITE may ring
    after a provisional. RFC 3261 gives a UAC no limit in Proceeding; without one a peer that
    rings forever would hold the transaction forever."""


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


TransactionEvent = TransactionTimedOut | TransactionTerminated


@dataclass(frozen=True, slots=True)
class Wire:
    """A message serialised once: what a transaction that only waits sends, first and again."""

    data: bytes
    """The message as it goes on the wire."""
    status: int | None
    """The status of a response, for the endpoint's counters; None for a request (an ACK)."""


@dataclass(eq=False)
class Transaction:
    """What all four machines share: identity, timers, outputs."""

    id: str
    request: Request | None
    """The request, until the transaction only waits out a timer (then None)."""
    reliable: bool
    timers: Timers
    state: State = State.TERMINATED
    outgoing: list[Message | Wire] = field(default_factory=list)
    events: list[TransactionEvent] = field(default_factory=list)
    last_response: Response | None = None
    """A server transaction's provisional, sent again for a retransmitted request (Proceeding)."""
    method: str = field(init=False, default="")
    """The request's method, kept once the request is let go (Timer H reports it)."""
    _wire: Wire | None = None
    """What a waiting state sends again: the final response of a server transaction while
    Completed, the ACK of an INVITE client transaction's non-2xx final while Completed."""
    _deadlines: dict[str, float] = field(default_factory=dict)
    _intervals: dict[str, float] = field(default_factory=dict)
    _passed: Response | None = None

    TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {}
    """(state, input) -> the name of the method that handles it. One table per class, not per
    transaction: building bound methods for every new transaction was a measurable share of the
    call path in a py-spy profile of serve under load."""

    def __post_init__(self) -> None:
        self.method = self._request().method

    @property
    def deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        return min(self._deadlines.values()) if self._deadlines else None

    @property
    def armed_timers(self) -> frozenset[str]:
        return frozenset(self._deadlines)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while self._deadlines:
            name = min(self._deadlines, key=self._deadlines.__getitem__)
            if self._deadlines[name] > now:
                return
            del self._deadlines[name]
            self._dispatch("timer_" + name, now, peer=True)

    def _dispatch(self, kind: str, now: float, *args: object, peer: bool) -> None:
        handler = self.TRANSITIONS.get((self.state, kind))
        if handler is None:
            if peer:
                return
            raise LocalError(f"{type(self).__name__}: {kind} not allowed in {self.state.value}")
        getattr(self, handler)(now, *args)

    def _arm(self, name: str, now: float, after: float) -> None:
        self._deadlines[name] = now + after

    def _disarm(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)
            self._intervals.pop(name, None)

    def _wait(self, name: str, now: float, unreliable_wait: float) -> None:
        """Arm a wait timer: ``unreliable_wait`` on UDP, fire at once on a reliable transport."""
        self._arm(name, now, 0.0 if self.reliable else unreliable_wait)

    def _start_retransmit(self, name: str, now: float) -> None:
        if not self.reliable:
            self._intervals[name] = self.timers.t1
            self._arm(name, now, self.timers.t1)

    def _request(self) -> Request:
        """The request, which only the states that still work on it hold."""
        if self.request is None:
            raise LocalError(f"{type(self).__name__}: no request left in {self.state.value}")
        return self.request

    def _only_wait(self, resend: Message | None = None) -> None:
        """Entering a state that only waits: keep ``resend`` as bytes (and send it now), let go
        of the parsed messages. The bytes are the ones sent first, so a peer that asks again
        gets a byte-identical answer, without serialising it again."""
        self.request = self.last_response = None
        self._wire = None
        if resend is not None:
            status = resend.status if isinstance(resend, Response) else None
            self._wire = Wire(resend.to_bytes(), status)
            self.outgoing.append(self._wire)

    def _send_again(self, now: float, response: Response | None = None) -> None:
        """What a waiting state answers with: ``response`` is the retransmitted final that
        asked for it (a client), or None (a server's retransmitted request, Timer G)."""
        if self._wire is not None:
            self.outgoing.append(self._wire)

    def _terminate(self, now: float) -> None:
        self.state = State.TERMINATED
        self._deadlines.clear()
        self._intervals.clear()
        self.events.append(TransactionTerminated(self.id))

    def _time_out(self, now: float) -> None:
        self.events.append(TransactionTimedOut(self.id, self.method))
        self._terminate(now)

    def transport_failed(self, reason: str, now: float) -> Response | None:
        """The transport could not deliver to the peer; the 503 the layer above must see
        instead of an answer, or None when the transaction no longer waits for one.

        :param reason: why, for the 503's reason phrase (it ends up in the call record).
        """
        self._passed = None
        self._dispatch("transport_error", now, reason, peer=True)
        passed, self._passed = self._passed, None
        return passed

    def _receive(self, kind: str, response: Response, now: float) -> bool:
        """Feed a response to a client machine; True when the layer above must see it. Nothing
        keeps it afterwards: a 2xx retransmission in Accepted goes up and is forgotten here."""
        self._passed = None
        self._dispatch(kind, now, response, peer=True)
        passed, self._passed = self._passed, None
        return passed is response

    def _transport_failed(self, now: float, reason: str) -> None:
        self._passed = self._request().response(503, reason)
        self._terminate(now)


def _response_class(response: Response) -> str:
    if response.status < 200:
        return "1xx"
    return "2xx" if response.status < 300 else "final_error"


def ack_for(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (§17.1.1.3): same branch, Route set and CSeq number."""
    headers = Headers()
    headers.add("Via", request.headers.get("via") or "")
    headers.add("Max-Forwards", "70")
    for name, value in request.headers:
        key = canonical_name(name)
        if key in ("from", "call-id", "route"):
            headers.add(name, value)
    headers.add("To", response.headers.get("to") or request.headers.get("to") or "")
    headers.add("CSeq", f"{request.cseq.number} ACK")
    return Request("ACK", request.uri, headers, b"")


@dataclass(eq=False)
class ClientInvite(Transaction):
    """§17.1.1: the INVITE client transaction (Figure 5, RFC 6026 Figure 5)."""

    def start(self, now: float) -> None:
        self.state = State.CALLING
        self.outgoing.append(self._request())
        self._start_retransmit("A", now)
        self._arm("B", now, 64 * self.timers.t1)

    def receive_response(self, response: Response, now: float) -> bool:
        """Feed a response; True when the layer above must see it."""
        return self._receive(_response_class(response), response, now)

    TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.CALLING, "timer_A"): "_retransmit",
        (State.CALLING, "timer_B"): "_time_out",
        (State.CALLING, "1xx"): "_provisional",
        (State.PROCEEDING, "1xx"): "_provisional",
        (State.PROCEEDING, "timer_C"): "_time_out",
        (State.CALLING, "2xx"): "_accepted",
        (State.PROCEEDING, "2xx"): "_accepted",
        (State.ACCEPTED, "2xx"): "_pass_up",
        (State.ACCEPTED, "timer_M"): "_terminate",
        (State.CALLING, "final_error"): "_rejected",
        (State.PROCEEDING, "final_error"): "_rejected",
        (State.COMPLETED, "final_error"): "_send_again",
        (State.COMPLETED, "timer_D"): "_terminate",
        (State.CALLING, "transport_error"): "_transport_failed",
        (State.PROCEEDING, "transport_error"): "_transport_failed",
    }

    def _retransmit(self, now: float) -> None:
        # Timer A doubles on every retransmission with no T2 cap for INVITE (§17.1.1.2).
        self.outgoing.append(self._request())
        self._intervals["A"] *= 2
        self._arm("A", now, self._intervals["A"])

    def _pass_up(self, now: float, response: Response) -> None:
        self._passed = response

    def _provisional(self, now: float, response: Response) -> None:
        self.state = State.PROCEEDING
        self._disarm("A", "B")
        self._arm("C", now, self.timers.c)
        self._passed = response

    def _accepted(self, now: float, response: Response) -> None:
        # RFC 6026 §7.2: stay to pass 2xx retransmissions up (each needs its ACK from the TU);
        # the TU builds those ACKs from its dialog, so nothing of the INVITE is needed here.
        self.state = State.ACCEPTED
        self._disarm("A", "B", "C")
        self._arm("M", now, 64 * self.timers.t1)
        self._passed = response
        self._only_wait()

    def _rejected(self, now: float, response: Response) -> None:
        # §17.1.1.3: a retransmitted final response gets the same ACK again, so keep its bytes.
        self.state = State.COMPLETED
        self._disarm("A", "B", "C")
        self._only_wait(ack_for(self._request(), response))
        self._wait("D", now, max(32.0, 64 * self.timers.t1))
        self._passed = response


@dataclass(eq=False)
class ClientNonInvite(Transaction):
    """§17.1.2: the non-INVITE client transaction (Figure 6)."""

    def start(self, now: float) -> None:
        self.state = State.TRYING
        self.outgoing.append(self._request())
        self._start_retransmit("E", now)
        self._arm("F", now, 64 * self.timers.t1)

    def receive_response(self, response: Response, now: float) -> bool:
        """Feed a response; True when the layer above must see it."""
        return self._receive("1xx" if response.status < 200 else "final", response, now)

    TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.TRYING, "timer_E"): "_retransmit",
        (State.PROCEEDING, "timer_E"): "_retransmit",
        (State.TRYING, "timer_F"): "_time_out",
        (State.PROCEEDING, "timer_F"): "_time_out",
        (State.TRYING, "1xx"): "_provisional",
        (State.PROCEEDING, "1xx"): "_provisional",
        (State.TRYING, "final"): "_completed",
        (State.PROCEEDING, "final"): "_completed",
        (State.COMPLETED, "timer_K"): "_terminate",
        (State.TRYING, "transport_error"): "_transport_failed",
        (State.PROCEEDING, "transport_error"): "_transport_failed",
    }

    def _retransmit(self, now: float) -> None:
        # In Trying E doubles up to T2; in Proceeding it is T2 (§17.1.2.2).
        self.outgoing.append(self._request())
        if self.state is State.PROCEEDING:
            interval = self.timers.t2
        else:
            interval = min(2 * self._intervals["E"], self.timers.t2)
        self._intervals["E"] = interval
        self._arm("E", now, interval)

    def _provisional(self, now: float, response: Response) -> None:
        self.state = State.PROCEEDING
        self._passed = response

    def _completed(self, now: float, response: Response) -> None:
        # §17.1.2.2: Completed only absorbs retransmitted finals until K; nothing is sent again.
        self.state = State.COMPLETED
        self._disarm("E", "F")
        self._wait("K", now, self.timers.t4)
        self._passed = response
        self._only_wait()


@dataclass(eq=False)
class ServerInvite(Transaction):
    """§17.2.1: the INVITE server transaction (Figure 7, RFC 6026 Figure 7)."""

    def start(self, now: float) -> None:
        # The transaction layer answers 100 at once so the carrier stops retransmitting (§17.2.1).
        self.state = State.PROCEEDING
        trying = self._request().response(100)
        self.last_response = trying
        self.outgoing.append(trying)

    def receive_request(self, request: Request, now: float) -> bool:
        """A retransmission (or the ACK); True when the ACK must go up (never for this machine)."""
        self._dispatch("ack" if request.method == "ACK" else "request", now, peer=True)
        return False

    def respond(self, response: Response, now: float) -> None:
        self._dispatch(_response_class(response), now, response, peer=False)

    TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.PROCEEDING, "request"): "_resend_provisional",
        (State.PROCEEDING, "1xx"): "_send_provisional",
        (State.PROCEEDING, "2xx"): "_send_2xx",
        (State.ACCEPTED, "2xx"): "_pass_down",
        (State.ACCEPTED, "timer_L"): "_terminate",
        (State.PROCEEDING, "final_error"): "_send_final",
        (State.COMPLETED, "request"): "_send_again",
        (State.COMPLETED, "timer_G"): "_retransmit",
        (State.COMPLETED, "timer_H"): "_time_out",
        (State.COMPLETED, "ack"): "_confirmed",
        (State.CONFIRMED, "timer_I"): "_terminate",
    }

    def _resend_provisional(self, now: float) -> None:
        if self.last_response is not None:
            self.outgoing.append(self.last_response)

    def _pass_down(self, now: float, response: Response) -> None:
        self.outgoing.append(response)

    def _send_provisional(self, now: float, response: Response) -> None:
        self.last_response = response
        self.outgoing.append(response)

    def _send_2xx(self, now: float, response: Response) -> None:
        # RFC 6026 §8.5: Accepted absorbs INVITE retransmissions; the 2xx itself is retransmitted
        # by the dialog layer above until the ACK arrives (§13.3.1.4), so nothing is kept.
        self.state = State.ACCEPTED
        self.outgoing.append(response)
        self._arm("L", now, 64 * self.timers.t1)
        self._only_wait()

    def _send_final(self, now: float, response: Response) -> None:
        # Completed sends the final again on Timer G and for each retransmitted INVITE until
        # the ACK; Timer H reports the method alone.
        self.state = State.COMPLETED
        self._only_wait(response)
        self._start_retransmit("G", now)
        self._arm("H", now, 64 * self.timers.t1)

    def _retransmit(self, now: float) -> None:
        self._send_again(now)
        interval = min(2 * self._intervals["G"], self.timers.t2)
        self._intervals["G"] = interval
        self._arm("G", now, interval)

    def _confirmed(self, now: float) -> None:
        # Confirmed only absorbs ACK retransmissions until I: nothing left to send.
        self.state = State.CONFIRMED
        self._disarm("G", "H")
        self._wait("I", now, self.timers.t4)
        self._only_wait()


@dataclass(eq=False)
class ServerNonInvite(Transaction):
    """§17.2.2: the non-INVITE server transaction (Figure 8)."""

    def start(self, now: float) -> None:
        self.state = State.TRYING

    def receive_request(self, request: Request, now: float) -> bool:
        self._dispatch("request", now, peer=True)
        return False

    def respond(self, response: Response, now: float) -> None:
        kind = "1xx" if response.status < 200 else "final"
        self._dispatch(kind, now, response, peer=False)

    TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.TRYING, "1xx"): "_provisional",
        (State.PROCEEDING, "1xx"): "_provisional",
        (State.TRYING, "final"): "_completed",
        (State.PROCEEDING, "final"): "_completed",
        (State.PROCEEDING, "request"): "_resend_provisional",
        (State.COMPLETED, "request"): "_send_again",
        (State.COMPLETED, "timer_J"): "_terminate",
    }

    def _resend_provisional(self, now: float) -> None:
        if self.last_response is not None:
            self.outgoing.append(self.last_response)

    def _provisional(self, now: float, response: Response) -> None:
        self.state = State.PROCEEDING
        self.last_response = response
        self.outgoing.append(response)

    def _completed(self, now: float, response: Response) -> None:
        # Completed answers each retransmitted request with this final until J (§17.2.2).
        self.state = State.COMPLETED
        self._only_wait(response)
        self._wait("J", now, 64 * self.timers.t1)
