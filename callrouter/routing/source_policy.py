"""Who may open SIP transactions, and how often: the allowlist, rate limits and flood bans.

Kamailio's permissions and pike modules are the model. In order, for every request that matches
no open transaction:

1. a banned source is dropped before its bytes are parsed (its TCP and TLS connections are
   closed as the ban starts, and new ones refused at accept while it lasts);
2. every request counts towards its source's flood limit: a trunk's sources get the generous
   ``carrier`` limit (a carrier's bursts are legitimate), requests in one of our dialogs from
   elsewhere (a destination's BYE) the same, and every other request from a stranger the strict
   one; past it the source is banned (dropped, unanswered) for ``ban_seconds``;
3. any other request from outside every trunk gets one stateless 403, or nothing in ``drop``
   mode;
4. each (source, method) pair has its own token bucket, so an OPTIONS flood cannot spend a
   carrier's INVITE budget; past it, one stateless 503 with Retry-After.

Refusals are counted by reason in ``rejected`` (allowlist, rate, malformed, banned). Pure:
``now`` is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from callrouter.ratelimit import TokenBuckets
from callrouter.routing.trunks import TrunkTable
from callrouter.sip.admission import Drop, Refuse, Verdict
from callrouter.sip.events import Flow
from callrouter.sip.message import Request
from callrouter.sip.pike import FloodLimit, Pike
from callrouter.sip.screening import KNOWN_METHODS

__all__ = ["REASONS", "MethodRate", "SourcePolicy", "parse_method_rates"]

log = logging.getLogger(__name__)

REASONS = ("allowlist", "rate", "malformed", "banned")
"""The reasons a request is refused (``callrouter_sip_rejected_total{reason}``)."""

_DROP = Drop()


@dataclass(frozen=True, slots=True)
class MethodRate:
    """Sustained requests per second and burst for one method, per source."""

    rate: float
    burst: float


def parse_method_rates(text: str) -> dict[str, MethodRate]:
    """``"OPTIONS=5/20, INVITE=50/200"`` (rate per second / burst); ValueError names the entry."""
    rates: dict[str, MethodRate] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        method, _, numbers = item.partition("=")
        rate, slash, burst = numbers.partition("/")
        try:
            parsed = MethodRate(float(rate), float(burst))
        except ValueError:
            parsed = None
        if not method.strip().isalpha() or not slash or parsed is None:
            raise ValueError(f"not METHOD=rate/burst: {item!r}")
        if parsed.rate <= 0 or parsed.burst < 1:
            raise ValueError(f"rate must be positive and burst at least 1: {item!r}")
        rates[method.strip().upper()] = parsed
    return rates


@dataclass(eq=False)
class SourcePolicy:
    """The admission policy of the SIP endpoint (``callrouter.sip.admission.Admission``).

    :param trunks: the carriers; their sources are served, others refused or dropped.
    :param rate: the default per-(source, method) rate; ``method_rates`` override it.
    :param strict: the flood limit of sources outside every trunk (None: no bans).
    :param carrier: the flood limit of trunk sources and of in-dialog requests (None: no bans).
    :param pike: the counters and the ban table.
    :param drop_unknown: send nothing (not even 403) to sources outside every trunk.
    """

    trunks: TrunkTable
    rate: MethodRate
    strict: FloodLimit | None
    carrier: FloodLimit | None
    pike: Pike
    method_rates: Mapping[str, MethodRate] = field(default_factory=dict)
    drop_unknown: bool = False
    max_sources: int = 100_000
    dialogs: Callable[[Request], bool] | None = None
    """Whether a request with a To tag belongs to a dialog we hold (the B2BUA's); None trusts
    the tag."""
    warn: Callable[[str], None] = field(default=log.warning)
    """Where the one line per ban goes."""
    on_ban: Callable[[str], None] = field(default=lambda host: None)
    """Told each source whose ban starts (the stream transports close its connections: a
    flooder must not keep a descriptor and a buffer on a connection whose bytes are dropped)."""
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    _buckets: dict[str, TokenBuckets] = field(default_factory=dict)

    def admits_source(self, host: str) -> bool:
        """Whether ``host`` belongs to a trunk (for transports that refuse strangers at accept)."""
        return self.trunks.for_source(host) is not None

    def banned(self, host: str, now: float) -> bool:
        """Whether ``host`` is banned now (for transports that refuse it at accept)."""
        return self.pike.banned(host, now)

    def admit_datagram(self, host: str, now: float) -> bool:
        if self.pike.banned(host, now):
            self.rejected["banned"] += 1
            return False
        return True

    def screen(self, request: Request, flow: Flow, now: float) -> Verdict:
        host = flow.host
        trunk = self.trunks.for_source(host)
        in_dialog = request.to.tag is not None and (
            trunk is not None or self.dialogs is None or self.dialogs(request)
        )
        limit = self.carrier if trunk is not None or in_dialog else self.strict
        if self._flooding(host, limit, now):
            return _DROP
        if trunk is None and not in_dialog:
            self.rejected["allowlist"] += 1
            return _DROP if self.drop_unknown else Refuse(403)
        wait = self._bucket(request.method).take(host, now)
        if wait > 0:
            self.rejected["rate"] += 1
            return Refuse(503, retry_after=max(1, round(wait)))
        return None

    def malformed(self, host: str, now: float) -> bool:
        trunk = self.trunks.for_source(host)
        if self._flooding(host, self.carrier if trunk is not None else self.strict, now):
            return False
        self.rejected["malformed"] += 1
        return trunk is not None or not self.drop_unknown

    def _flooding(self, host: str, limit: FloodLimit | None, now: float) -> bool:
        """Count one request; True (and one log line when the ban starts) past the limit."""
        if limit is None:
            return False
        bans = self.pike.bans
        if not self.pike.hit(host, limit, now):
            return False
        self.rejected["banned"] += 1
        if self.pike.bans != bans:
            self.warn(
                f"sip: banned {host} for {self.pike.ban_seconds:g} s: more than "
                f"{limit.requests} requests in {limit.window:g} s"
            )
            self.on_ban(host)
        return True

    def _bucket(self, method: str) -> TokenBuckets:
        # Made-up method names share one table, so a scanner cannot grow the tables without end.
        key = method if method in KNOWN_METHODS else "*"
        buckets = self._buckets.get(key)
        if buckets is None:
            rate = self.method_rates.get(key, self.rate)
            buckets = TokenBuckets(rate.rate, rate.burst, self.max_sources)
            self._buckets[key] = buckets
        return buckets
