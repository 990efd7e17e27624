"""Drives the sans-IO ``SipEndpoint`` from Twisted: feed bytes in, send what is due, keep one timer.

No SIP decisions here (STYLE 2): the service moves bytes between sockets and the endpoint, hands
events to the application above and re-arms a single delayed call whenever the earliest
transaction deadline moves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.errors import ParseError
from callrouter.sip.events import Event, Flow, Transmission
from callrouter.sip.message import Message, Request, Response
from callrouter.transport.advertise import LocalAddresses

__all__ = ["Clock", "Sender", "SipService"]

log = logging.getLogger(__name__)


class Sender(Protocol):
    """A transport that can deliver bytes to a flow (UDP socket, TCP/TLS connection table)."""

    def send(self, data: bytes, flow: Flow) -> None: ...


class Clock(Protocol):
    """The part of the reactor the service uses: time and delayed calls."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object) -> Any: ...


Handler = Callable[[Event], None]


@dataclass(eq=False)
class SipService:
    """The transaction layer wired to real transports.

    :param endpoint: the sans-IO transaction layer.
    :param clock: the reactor (``task.Clock`` in tests).
    """

    endpoint: SipEndpoint
    clock: Clock
    handler: Handler = field(default=lambda event: None)
    senders: dict[str, Sender] = field(default_factory=dict)
    addresses: LocalAddresses | None = None
    """What each listener advertises; None: the endpoint's fixed ``advertised`` table."""
    _timer: Any = None
    """The armed IDelayedCall (zope interfaces do not type-check as methods)."""
    _timer_at: float | None = None

    def receive(self, data: bytes, flow: Flow) -> None:
        """Bytes from a transport: one datagram or one framed stream message."""
        self.endpoint.receive(data, flow, self.clock.seconds())
        self.flush()

    def framing_failed(self, error: ParseError, flow: Flow) -> None:
        """A stream transport could not frame what ``flow`` sent (it closes the connection)."""
        self.endpoint.framing_failed(error, flow, self.clock.seconds())
        self.flush()

    def respond(self, transaction_id: str, response: Response) -> None:
        self.endpoint.respond(transaction_id, response, self.clock.seconds())
        self.flush()

    def sent_by(self, flow: Flow) -> str:
        """host:port written in Via and Contact for a peer at ``flow``."""
        if self.addresses is not None:
            return self.addresses.sent_by(flow)
        return self.endpoint.advertised.get(flow.transport, "invalid")

    def local_host(self, flow: Flow) -> str:
        """The host written in From and Call-ID for a peer at ``flow``."""
        if self.addresses is not None:
            return self.addresses.host(flow)
        return self.sent_by(flow).rsplit(":", 1)[0]

    def send_request(self, request: Request, flow: Flow) -> str:
        tid = self.endpoint.send_request(
            request, flow, self.clock.seconds(), sent_by=self.sent_by(flow)
        )
        self.flush()
        return tid

    def cancel(self, invite_id: str) -> str | None:
        tid = self.endpoint.cancel(invite_id, self.clock.seconds())
        self.flush()
        return tid

    def send_stateless(self, message: Message, flow: Flow) -> None:
        self.endpoint.send_stateless(message, flow)
        self.flush()

    def transport_failed(self, flow: Flow, reason: str) -> None:
        """A transport could not reach ``flow``: requests waiting there fail now (503)."""
        self.endpoint.transport_failed(flow, reason, self.clock.seconds())
        self.flush()

    def flush(self) -> None:
        """Send what is due, hand events up, re-arm the timer. Events may cause more output."""
        for _ in range(1000):
            sent = self._transmit(self.endpoint.transmissions())
            event = self.endpoint.next_event()
            if event is None and not sent:
                break
            if event is not None:
                self.handler(event)
        self._rearm()

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _transmit(self, transmissions: list[Transmission]) -> bool:
        for t in transmissions:
            sender = self.senders.get(t.flow.transport)
            if sender is None:
                log.warning("sip: no %s transport to reach %s:%s", *_where(t.flow))
                continue
            sender.send(t.data, t.flow)
        return bool(transmissions)

    def _rearm(self) -> None:
        deadline = self.endpoint.next_deadline()
        if deadline == self._timer_at and self._timer is not None and self._timer.active():
            return
        self.close()
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timers(self.clock.seconds())
        self.flush()


def _where(flow: Flow) -> tuple[str, str, int]:
    return flow.transport, flow.host, flow.port
