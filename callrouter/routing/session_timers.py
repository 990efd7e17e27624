"""Session timers (RFC 4028) as the B2BUA keeps them: observed, never refreshed by us.

Rules of this file:
- The B2BUA behaves towards session timers like the proxy of RFC 4028 §8 (Kamailio's ``sst``
  module): Session-Expires, Min-SE and ``Supported: timer`` pass from one leg to the other with
  each INVITE and UPDATE, the 2xx carries the interval back, and whoever the two ends chose as
  refresher refreshes end to end through our relay. Every re-INVITE or UPDATE we send is one
  we relay, so we never have to be the refresher ourselves.
- The refresher roles survive the relay unchanged: ``uac`` and ``uas`` name the ends of each
  transaction, and a relayed request keeps its direction (the caller's refresh reaches the
  destination as ours, where we are the UAC).
- When the caller asks for no timer, the destination is asked for ``ask`` seconds without a
  refresher: RFC 4028 §9's table then makes the destination the refresher (a caller that does
  not support timers cannot be one), so a destination that supports timers proves itself alive
  and a dead carrier shows as a refresh that times out. A destination without timers changes
  nothing: the call falls under ``max_call_seconds``.
- A 2xx without Session-Expires to a request that asked for one means the far end does not do
  timers: when the request's sender supports them, §8.2 has the interval put back in the 2xx
  with ``refresher=uac`` (and ``Require: timer``), so the sender refreshes; otherwise the call
  has no session timer from then on.
- Pure functions of messages; the controller keeps the interval and the timer.
"""

from __future__ import annotations

import logging

from callrouter.sip.errors import RemoteError
from callrouter.sip.headers import Headers
from callrouter.sip.message import Request, Response
from callrouter.sip.session_timer import (
    MIN_SE,
    SessionExpires,
    min_se,
    session_expires,
    supports_timer,
)

__all__ = ["REFRESHES", "answer_interval", "carry_request", "carry_response", "refused_interval"]

log = logging.getLogger(__name__)

REFRESHES = frozenset({"INVITE", "UPDATE"})
"""The requests whose 2xx refreshes a session (RFC 4028 §10)."""


def _readable(message: Request | Response) -> tuple[SessionExpires | None, int | None]:
    """Session-Expires and Min-SE of a message; an unreadable one counts as absent (a response
    cannot be refused, and a request was screened already)."""
    try:
        return session_expires(message), min_se(message)
    except RemoteError as exc:
        log.info("session timer ignored: %s", exc.reason)
        return None, None


def carry_request(
    incoming: Request, headers: Headers, *, ask: int = 0, floor: int | None = None
) -> None:
    """Put the session-timer fields of ``incoming`` into ``headers`` (its relayed copy, or a
    destination's INVITE).

    :param ask: the interval to ask for when ``incoming`` asks for none (0: ask for none).
    :param floor: a Min-SE the far side answered 422 with (§7.4: the retry asks for at least it).
    """
    asked, smallest = _readable(incoming)
    if supports_timer(incoming.headers):
        headers.add("Supported", "timer")
    # §8.1: never below the Min-SE on the way, nor below 90 s: a too-small interval from a
    # sender that cannot take a 422 (screening refused the others) is raised, not refused.
    lowest = max(MIN_SE, smallest or 0, floor or 0)
    if asked is not None:
        wanted = SessionExpires(max(asked.interval, lowest), asked.refresher)
    elif ask:
        wanted = SessionExpires(max(ask, lowest))
    else:
        if smallest is not None:
            headers.add("Min-SE", str(smallest))
        return
    headers.add("Session-Expires", str(wanted))
    if smallest is not None or lowest > MIN_SE:
        headers.add("Min-SE", str(lowest))


def answer_interval(sent: Request, incoming: Request, response: Response) -> SessionExpires | None:
    """The session interval a 2xx to ``sent`` settles (None: no session timer).

    :param sent: the request as it left us (its Session-Expires is what was asked for).
    :param incoming: the request as its sender gave it (whether that sender supports timers).
    """
    got, _ = _readable(response)
    if got is not None:
        # Never below 90 s (§4): a peer's 2xx saying 1 s would have us hang up at once.
        return SessionExpires(max(got.interval, MIN_SE), got.refresher)
    asked, _ = _readable(sent)
    if asked is not None and supports_timer(incoming.headers):
        return SessionExpires(asked.interval, "uac")  # §8.2: the sender refreshes
    return None


def carry_response(response: Response, answer: Response, interval: SessionExpires | None) -> None:
    """Put the session-timer fields of the far side's ``response`` into our ``answer`` to the
    sender: the settled ``interval`` of a 2xx (with ``Require: timer`` when the sender is the
    refresher, §9), the Min-SE of a 422."""
    if response.status == 422:
        floor = response.headers.get("min-se")
        if floor is not None:
            answer.headers.add("Min-SE", floor)
        return
    if interval is None:
        return
    answer.headers.add("Session-Expires", str(interval))
    if interval.refresher == "uac":
        answer.headers.add("Require", "timer")


def refused_interval(sent: Request, response: Response) -> int | None:
    """The Min-SE of a 422 worth retrying ``sent`` with (§7.4), or None: no 422, an unreadable
    Min-SE, or one no larger than what was asked (the far side would refuse it again)."""
    if response.status != 422:
        return None
    asked, _ = _readable(sent)
    _, floor = _readable(response)
    if floor is None or (asked is not None and floor <= asked.interval):
        return None
    return floor
