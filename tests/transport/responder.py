"""A small UAS built on the core, for interop tests: it answers OPTIONS, rings and answers an
INVITE with SDP, repeats the 2xx until the ACK, and answers BYE."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from callrouter.sip.dialogs import AnswerRepeater, Dialog, DialogId
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import AckReceived, Event, Flow, RequestReceived
from callrouter.sip.message import Request
from callrouter.sip.screening import Capabilities, answer_options, screen
from callrouter.sip.transactions import Timers
from callrouter.transport.service import SipService

ANSWER_SDP = (
    b"v=0\r\n"
    b"o=responder 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


@dataclass(eq=False)
class Responder:
    """Answers calls; ``seen`` lists each request method as it arrives."""

    reactor: Any
    host: str = "127.0.0.1"
    seen: list[str] = field(default_factory=list)
    dialogs: dict[DialogId, Dialog] = field(default_factory=dict)
    repeaters: dict[DialogId, AnswerRepeater] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    service: SipService = field(init=False)
    _tags: int = 0

    def __post_init__(self) -> None:
        self.service = SipService(SipEndpoint({}, Timers()), self.reactor, self.handle)

    def handle(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self.seen.append(event.request.method)
            self._request(event)
        elif isinstance(event, AckReceived):
            self.seen.append("ACK")
            for key, dialog in self.dialogs.items():
                if dialog.matches(event.request) and key in self.repeaters:
                    self.repeaters.pop(key).ack()
                    dialog.confirmed = True

    def _request(self, event: RequestReceived) -> None:
        request, tid = event.request, event.transaction_id
        self._tags += 1
        tag = f"resp{self._tags}"
        refusal = screen(request, Capabilities(), tag)
        if refusal is not None:
            self.service.respond(tid, refusal)
        elif request.method == "OPTIONS":
            self.service.respond(tid, answer_options(request, Capabilities(), tag))
        elif request.method == "INVITE" and request.to.tag is None:
            self._answer(request, tid, tag, event.flow)
        elif request.method == "BYE":
            dialog = next((d for d in self.dialogs.values() if d.matches(request)), None)
            if dialog is None:
                self.service.respond(tid, request.response(481, to_tag=tag))
                return
            self.service.respond(tid, dialog.answer(request, 200))
            del self.dialogs[dialog.id]
            self.ended.set()
        else:
            self.service.respond(tid, request.response(481, to_tag=tag))

    def _answer(self, request: Request, tid: str, tag: str, flow: Flow) -> None:
        port = self.service.endpoint.advertised.get(flow.transport, "")
        contact = f"sip:responder@{port};transport={flow.transport}"
        dialog = Dialog.as_uas(request, tag, contact)
        self.dialogs[dialog.id] = dialog
        self.service.respond(tid, dialog.answer(request, 180))
        ok = dialog.answer(request, 200, ANSWER_SDP)
        self.service.respond(tid, ok)
        repeater = AnswerRepeater(ok, self.service.endpoint.timers, self.reactor.seconds())
        self.repeaters[dialog.id] = repeater
        self._repeat_later(dialog.id, repeater, flow)

    def _repeat_later(self, key: DialogId, repeater: AnswerRepeater, flow: Flow) -> None:
        deadline = repeater.deadline
        if deadline is None:
            return

        def fire() -> None:
            for response in repeater.handle_timer(self.reactor.seconds()):
                self.service.send_stateless(response, flow)
            self._repeat_later(key, repeater, flow)

        self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()), fire)
