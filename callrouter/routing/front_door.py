"""The first answer to every inbound SIP request: admission, screening, OPTIONS, unknown numbers.

Sources were admitted below, before any transaction existed (``source_policy``: allowlist, rate
limits, flood bans, each refusal stateless). Here come RFC 3261 screening (405, 416, 420, 415,
483), OPTIONS keep-alives, INVITEs for numbers that are not ours (404), and 503 with Retry-After
for new calls while the server drains, while a call could not be recorded durably (the call
journal holds too many events in memory only) and past the concurrency caps per trunk and per
client. Calls to our numbers go to the call handler; out-of-dialog BYE and friends get 481.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from callrouter.routing.b2bua import B2bua
from callrouter.routing.outbound import METHODS, RELAYED
from callrouter.routing.trunks import Trunk, TrunkTable, normalise
from callrouter.sip.errors import SipError
from callrouter.sip.events import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from callrouter.sip.headers import parse_name_address
from callrouter.sip.message import Request, Response
from callrouter.sip.screening import Capabilities, answer_options, screen
from callrouter.sip.uri import SipUri, TelUri, Uri
from callrouter.store.numbers import Number

__all__ = ["FrontDoor", "caller_number", "dialled_number"]

log = logging.getLogger(__name__)

DRAINING_RETRY_AFTER = 60
"""Seconds a carrier is asked to keep new calls away from a server that is stopping."""

UNRECORDABLE_RETRY_AFTER = 30
"""Seconds a carrier is asked to keep new calls away while they could not be recorded: a
database restarts in seconds to a minute (the embedded one is retried within 30 s)."""


def dialled_number(request: Request, trunk: Trunk) -> str | None:
    """The E.164 number called: the Request-URI's, or To's when the trunk says so or the
    Request-URI names no number (some SBCs rewrite it to a trunk name)."""
    if trunk.number_from == "to":
        return uri_number(request.to.uri, trunk.country)
    return uri_number(request.target, trunk.country) or uri_number(request.to.uri, trunk.country)


def caller_number(request: Request, country: str = "GB") -> str:
    """The caller's E.164 number from P-Asserted-Identity, else From; "" when withheld."""
    if "id" in {p.strip().lower() for p in request.headers.get_all("privacy")}:
        return ""
    for value in [*request.headers.get_all("p-asserted-identity"), request.headers.get("from")]:
        if value is None:
            continue
        try:
            number = uri_number(parse_name_address(value).uri, country)
        except SipError:
            continue
        if number is not None:
            return number
    return ""


def uri_number(target: Uri, country: str = "GB") -> str | None:
    """The E.164 number a SIP or tel URI names, if it names one."""
    if isinstance(target, TelUri):
        digits = target.digits
    elif isinstance(target, SipUri) and target.user_unescaped:
        digits = target.user_unescaped.split(";", 1)[0]
    else:
        return None
    return normalise(digits, country)


Responder = Callable[[str, Response], None]
NumberLookup = Callable[[str], Awaitable[Number | None]]


@dataclass(eq=False)
class FrontDoor:
    """The transaction user for inbound requests until a call takes over.

    :param respond: sends a response in a server transaction (``SipService.respond``).
    :param find_number: the tracking number for an E.164 number, or None.
    :param trunks: the carriers allowed to send requests, and how to read theirs.
    :param calls: the B2BUA that takes calls to our numbers.
    :param max_calls_per_trunk: calls up at once from one trunk; 0 for no cap.
    :param max_calls_per_client: calls up at once to one client's numbers; 0 for no cap.
    """

    respond: Responder
    find_number: NumberLookup
    trunks: TrunkTable
    calls: B2bua | None = None
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(methods=(*METHODS, *RELAYED), extensions=("timer",))
    )
    """What OPTIONS answers and screening allows: our methods and those we relay in dialogs
    (outside one, UPDATE and INFO get 481, RFC 3311 §5.2), and session timers (RFC 4028)."""
    max_calls_per_trunk: int = 0
    max_calls_per_client: int = 0
    busy_retry_after: int = 5
    """Seconds in the Retry-After of a 503 for a cap reached."""
    rejected: dict[int, int] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    """New calls answered 503, by reason (draining, unrecordable, capacity; a metric)."""
    draining: bool = False
    """The server is stopping: new calls get 503 with Retry-After, so carriers fail over."""
    unrecordable: Callable[[], bool] = field(default=lambda: False)
    """Whether a new call could only be recorded in memory, to be lost by a crash (the call
    journal's ``refusing_calls``): it gets 503 with Retry-After, so the carrier sends it to a
    node that can record it. Calls up are not touched."""
    _pending: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def handle(self, event: Event) -> None:
        calls = self.calls
        if isinstance(event, RequestReceived):
            if calls is not None and event.request.to.tag is not None:
                if not calls.in_dialog(event):
                    self._answer(event.transaction_id, event.request.response(481))
                return
            self._request(event)
        elif isinstance(event, CancelReceived):
            if calls is not None and calls.cancelled(event):
                return
            task = self._pending.pop(event.invite_transaction_id, None)
            if task is not None:
                task.cancel()
                self._answer(
                    event.invite_transaction_id, event.request.response(487, to_tag=_tag())
                )
        elif calls is not None and isinstance(event, ResponseReceived):
            calls.response(event)
        elif calls is not None and isinstance(event, AckReceived):
            calls.ack(event)
        elif calls is not None and isinstance(event, TransactionTimedOut):
            calls.timed_out(event)

    def _answer(self, tid: str, response: Response) -> None:
        if response.status >= 300:
            self.rejected[response.status] = self.rejected.get(response.status, 0) + 1
        self.respond(tid, response)

    def _busy(
        self, tid: str, request: Request, reason: str, retry_after: int, phrase: str | None = None
    ) -> None:
        """503 with Retry-After (RFC 3261 §21.5.4): the carrier tries another route."""
        self.refused[reason] += 1
        busy = request.response(503, phrase, to_tag=_tag())
        busy.headers.add("Retry-After", str(retry_after))
        self._answer(tid, busy)

    def _request(self, event: RequestReceived) -> None:
        request, tid = event.request, event.transaction_id
        if request.to.tag is not None:
            self._answer(tid, request.response(481))
            return
        trunk = self.trunks.for_source(event.flow.host)
        if trunk is None:
            # Only a policy that admits strangers lets one through (a bare endpoint in tests).
            self._answer(tid, request.response(403, to_tag=_tag()))
            return
        refusal = screen(request, self.capabilities, _tag())
        if refusal is not None:
            self._answer(tid, refusal)
        elif request.method in ("INVITE", "OPTIONS") and self.draining:
            # §11.2: OPTIONS gets what an INVITE would, so a carrier's keep-alive probe sees
            # the server going away before its next call does.
            self._busy(tid, request, "draining", DRAINING_RETRY_AFTER, "Shutting Down")
        elif request.method == "INVITE" and self.unrecordable():
            # Only INVITE: an OPTIONS 503 could mark the trunk down at the carrier for longer
            # than the outage that caused it.
            self._busy(tid, request, "unrecordable", UNRECORDABLE_RETRY_AFTER)
        elif request.method == "OPTIONS":
            self._answer(tid, answer_options(request, self.capabilities, _tag()))
        elif request.method == "INVITE":
            task = asyncio.get_running_loop().create_task(self._invite(event, trunk))
            self._pending[tid] = task
            task.add_done_callback(lambda _: self._pending.pop(tid, None))
        else:
            self._answer(tid, request.response(481, to_tag=_tag()))

    async def _invite(self, event: RequestReceived, trunk: Trunk) -> None:
        request, tid = event.request, event.transaction_id
        dialled = dialled_number(request, trunk)
        number = await self.find_number(dialled) if dialled is not None else None
        if number is None:
            self._answer(tid, request.response(404, to_tag=_tag()))
            return
        self._pending.pop(tid, None)
        if self.calls is None:
            self._answer(tid, request.response(480, to_tag=_tag()))
            return
        if self._at_capacity(trunk, number):
            self._busy(tid, request, "capacity", self.busy_retry_after)
            return
        self.calls.start(
            request,
            tid,
            event.flow,
            number,
            caller=caller_number(request, trunk.country),
            trunk=trunk,
        )

    def _at_capacity(self, trunk: Trunk, number: Number) -> bool:
        """Whether one more call from ``trunk`` to ``number`` would pass a concurrency cap."""
        if self.calls is None or not (self.max_calls_per_trunk or self.max_calls_per_client):
            return False
        from_trunk = to_client = 0
        for call in self.calls.calls.values():
            if call.trunk is not None and call.trunk.name == trunk.name:
                from_trunk += 1
            if call.number.client_id == number.client_id:
                to_client += 1
        return bool(
            (self.max_calls_per_trunk and from_trunk >= self.max_calls_per_trunk)
            or (self.max_calls_per_client and to_client >= self.max_calls_per_client)
        )


def _tag() -> str:
    return secrets.token_hex(6)
