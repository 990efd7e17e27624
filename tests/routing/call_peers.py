"""In-memory peers around the sans-IO call controller: a carrier that calls, PBXs that answer, a
fake clock that fires the controller's timers, and a ledger of everything it asked for.

The peers build their messages with the SIP core's own dialogs (sip/dialogs.py), so what they
send is what a real UA would: the PBX's BYE carries the To tag it answered with, the carrier's
BYE the tag of our 200.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from callrouter.call_events import CallEnded, CallEvent, CallStarted
from callrouter.routing.actions import (
    Action,
    AwaitMedia,
    CancelRequest,
    CancelTimer,
    Finished,
    Forget,
    PlayPrompt,
    Record,
    Resolve,
    Respond,
    SendRequest,
    SendStateless,
    StartTimer,
)
from callrouter.routing.call import Call, TimerKey
from callrouter.routing.controller import Controller
from callrouter.routing.dialplan import Action as PlanAction
from callrouter.routing.dialplan import Condition, Step
from callrouter.routing.events import (
    AckArrived,
    CallArrived,
    ControllerEvent,
    InDialogRequest,
    Resolved,
    Responded,
    TimedOut,
    TimerFired,
)
from callrouter.routing.outbound import destination_uri
from callrouter.routing.trunks import Trunk
from callrouter.sip.dialogs import Dialog
from callrouter.sip.events import Flow
from callrouter.sip.message import Message, Request, Response, parse_message
from callrouter.sip.transactions import Timers
from callrouter.store.ids import new_id
from callrouter.store.numbers import Number

CARRIER = Flow("udp", "198.51.100.7", 5060)
EPOCH = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
US = "192.0.2.1:5060"
E = TypeVar("E")


class Local:
    """What we advertise: one address for every peer."""

    def sent_by(self, flow: Flow) -> str:
        return US

    def local_host(self, flow: Flow) -> str:
        return US.split(":", maxsplit=1)[0]


def inbound_invite(call_number: int = 1) -> Request:
    body = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    lines = [
        "INVITE sip:+441515550001@192.0.2.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcarrier{call_number}",
        "Max-Forwards: 70",
        "From: <sip:+447700900123@carrier.example>;tag=carrier",
        "To: <sip:+441515550001@192.0.2.1>",
        f"Call-ID: inbound-{call_number}@carrier.example",
        "CSeq: 1 INVITE",
        "Contact: <sip:gw@198.51.100.7:5060>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return cast(Request, parse_message("\r\n".join(lines).encode() + body))


def number(record: bool = False) -> Number:
    return Number(
        id=new_id(),
        client_id=new_id(),
        e164="+441515550001",
        pool_id=None,
        destination=None,
        dialplan="test",
        dialplan_params={},
        record=record,
        label=None,
        source=None,
        medium=None,
        campaign=None,
        created_at=EPOCH,
        updated_at=EPOCH,
    )


def steps(*actions: PlanAction) -> list[Step]:
    return [Step(action, Condition(), line) for line, action in enumerate(actions, 1)]


def answer_to(request: Request, status: int, tag: str, contact: str | None = None) -> Response:
    """A peer's answer to ``request``: its tag, and a Contact when the answer makes a dialog."""
    response = request.response(status, to_tag=tag if status > 100 else None)
    if contact is not None and 100 < status < 300:
        response.headers.add("Contact", f"<{contact}>")
    return response


@dataclass
class Peers:
    """The controller, a fake clock and the peers' view of the wire."""

    controller: Controller = field(default_factory=lambda: Controller(Local(), Timers()))
    now: float = 0.0
    timers: dict[TimerKey, float] = field(default_factory=dict)
    invites: dict[int, SendRequest] = field(default_factory=dict)
    """Outbound INVITEs (new legs, not re-INVITEs) by the controller's ref."""
    requests: list[SendRequest] = field(default_factory=list)
    """Every request sent, in order."""
    stateless: list[tuple[Message, Flow]] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    forgotten: set[int] = field(default_factory=set)
    answers: dict[str, list[Response]] = field(default_factory=dict)
    """Our answers by the server transaction they answer."""
    records: list[CallEvent] = field(default_factory=list)
    resolving: list[Resolve] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    media: list[Action] = field(default_factory=list)
    """Media actions asked for (await, play)."""
    actions: list[Action] = field(default_factory=list)
    dialogs: dict[str, Dialog] = field(default_factory=dict)
    """The peers' own dialogs."""
    carrier_invites: dict[str, Request] = field(default_factory=dict)
    """The carrier's INVITEs by our server transaction: the carrier keeps its own (the
    controller lets its copy go once the call is up)."""

    # -- driving -------------------------------------------------------------------------------

    def feed(self, event: ControllerEvent) -> list[Action]:
        out = self.controller.handle(event, self.now, EPOCH + timedelta(seconds=self.now))
        for action in out:
            self._apply(action)
        self.actions += out
        return out

    def _apply(self, action: Action) -> None:
        match action:
            case SendRequest():
                self.requests.append(action)
                request = action.request
                if request.method == "INVITE" and action.ref is not None and not request.to.tag:
                    self.invites[action.ref] = action
            case StartTimer():
                self.timers[action.key] = self.now + action.delay
            case CancelTimer():
                self.timers.pop(action.key, None)
            case Respond():
                self.answers.setdefault(action.tid, []).append(action.response)
            case SendStateless():
                self.stateless.append((action.message, action.flow))
            case CancelRequest():
                self.cancels.append(action.ref)
            case Forget():
                self.forgotten.add(action.ref)
            case Record():
                self.records.append(action.event)
            case Resolve():
                self.resolving.append(action)
            case Finished():
                self.finished.append(action)
            case AwaitMedia() | PlayPrompt():
                self.media.append(action)

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing every timer due on the way, in order."""
        until = self.now + seconds
        for _ in range(10_000):
            due = [(at, key) for key, at in self.timers.items() if at <= until]
            if not due:
                break
            at, key = min(due, key=lambda item: (item[0], item[1].kind, item[1].ref))
            del self.timers[key]
            self.now = max(self.now, at)
            self.feed(TimerFired(key))
        else:
            raise AssertionError("timers keep firing")
        self.now = until

    def arrive(
        self,
        *plan: PlanAction,
        record: bool = False,
        call_number: int = 1,
        trunk: Trunk | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Call:
        """The carrier's INVITE (with ``headers`` added) arrives for a number with ``plan``."""
        request = inbound_invite(call_number)
        for name, value in headers:
            request.headers.add(name, value)
        call = Call(
            id=new_id(),
            number=number(record),
            request=request,
            tid=f"carrier-invite-{call_number}",
            flow=CARRIER,
            local_tag=f"ours{call_number}",
            steps=steps(*plan),
            params={},
            record=record,
            trunk=trunk or Trunk("carrier"),
            caller_number="+447700900123",
            presented_number="+447700900123",
        )
        self.carrier_invites[call.tid] = request
        self.feed(CallArrived(call))
        return call

    def resolve(
        self, *flows: Flow, media_failure: str | None = None, outbound: Trunk | None = None
    ) -> list[int]:
        """Every branch waiting for its destination's location resolves to ``flows`` (or to the
        host of its URI), an E.164 destination through ``outbound``; returns the refs of the
        INVITEs that left."""
        before = set(self.invites)
        pending, self.resolving = self.resolving, []
        for asked in pending:
            uri, trunk = destination_uri(asked.destination, outbound)
            targets = list(flows) or (
                [Flow("udp", uri.host, uri.port or 5060)] if uri is not None else []
            )
            self.feed(Resolved(asked.call, asked.seq, uri, trunk, targets, media_failure))
        return [ref for ref in self.invites if ref not in before]

    def reply(
        self,
        ref: int,
        status: int,
        tag: str = "pbx",
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """The PBX behind ``ref`` answers its INVITE (with ``headers`` added)."""
        invite = self.invites[ref].request
        response = answer_to(invite, status, tag, f"sip:pbx@{self.invites[ref].flow.host}:5070")
        for name, value in headers:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.feed(Responded(ref, response))
        return response

    def time_out(self, ref: int) -> None:
        self.feed(TimedOut(ref))

    def pbx_dialog(self, ref: int, tag: str = "pbx") -> Dialog:
        """The PBX's side of the dialog its 2xx to ``ref`` made (one per dialog: its CSeq
        counts on)."""
        key = f"pbx-{ref}-{tag}"
        if key not in self.dialogs:
            invite = self.invites[ref].request
            self.dialogs[key] = Dialog.as_uas(invite, tag, "sip:pbx@203.0.113.9:5070")
        return self.dialogs[key]

    def carrier_dialog(self, call: Call) -> Dialog:
        """The carrier's side of the dialog our 200 made."""
        key = f"carrier-{call.tid}"
        if key not in self.dialogs:
            ok = next(r for r in self.answers[call.tid] if r.status == 200)
            invite = self.carrier_invites[call.tid]
            self.dialogs[key] = Dialog.as_uac(invite, ok, "sip:gw@198.51.100.7:5060")
        return self.dialogs[key]

    def carrier_acks(self, call: Call) -> None:
        ok = next(r for r in self.answers[call.tid] if r.status == 200)
        self.feed(AckArrived(self.carrier_dialog(call).request("ACK", cseq=ok.cseq.number)))

    def in_dialog(self, dialog: Dialog, method: str, tid: str, body: bytes = b"") -> None:
        self.feed(InDialogRequest(tid, dialog.request(method, body)))

    # -- reading -------------------------------------------------------------------------------

    def caller_statuses(self, call: Call) -> list[int]:
        return [r.status for r in self.answers.get(call.tid, [])]

    def sent(self, method: str) -> list[SendRequest]:
        return [s for s in self.requests if s.request.method == method]

    def acks(self) -> list[Request]:
        return [m for m, _ in self.stateless if isinstance(m, Request) and m.method == "ACK"]

    def byes_to(self, dialog_call_id: str) -> list[Request]:
        return [s.request for s in self.sent("BYE") if s.request.call_id == dialog_call_id]

    def events(self, kind: type[E]) -> list[E]:
        return [e for e in self.records if isinstance(e, kind)]

    def ends(self) -> list[CallEnded]:
        return [e for e in self.records if isinstance(e, CallEnded)]

    def starts(self) -> list[CallStarted]:
        return [e for e in self.records if isinstance(e, CallStarted)]
