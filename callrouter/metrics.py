"""Prometheus metrics: one registry, built by the composition root and handed to what counts.

Two kinds of figures. Events the application sees once (a call ends, a webhook is delivered, a
recording is finished) are prometheus-client counters and histograms incremented where they
happen. State that already lives in plain objects (live calls, transactions, leases, the SIP
core's integer counters, the journal's backlog) is read at scrape time by :class:`StateCollector`,
so the sans-IO core never imports prometheus-client and nothing is counted twice.

Each media worker is another process: it keeps cumulative counters and answers a ``stats``
command on its control channel; each scrape asks every worker (:meth:`Metrics.worker_totals`)
and adds the growth since that worker's last answer, so a restarted worker (counters back at
zero) never makes a counter go down. prometheus-client's multiprocess mode was the
alternative; it needs an environment variable set before import, shared mmap files that a
SIGKILLed worker leaves behind, and it cannot carry the gauges this server computes at scrape
time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics", "State", "StateCollector", "watch_event_loop"]

PREFIX = "callrouter"

# Post-dial delay: carriers answer 18x within tens of milliseconds; a dialplan's failover
# after a silent target (sip.target_timeout, 5 s) lands in the top buckets.
_PDD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_KEEPALIVE_LEGS = ("caller", "callee")
_KEEPALIVE_OUTCOMES = ("answered", "lost", "no_answer", "other")
"""What a dialog keepalive's final answer did (routing/actions.py ``ObserveKeepalive``)."""


@dataclass
class State:
    """Readers of plain state, called at scrape time; each returns what it reads now."""

    calls_active: Callable[[], int] = lambda: 0
    sip_transactions: Callable[[], int] = lambda: 0
    sip_requests: Callable[[], Mapping[str, int]] = dict
    """Requests received, by method (the SIP core's counter)."""
    sip_responses: Callable[[], Mapping[int, int]] = dict
    """Responses sent, by status code (the SIP core's counter)."""
    sip_retransmissions: Callable[[], int] = lambda: 0
    sip_rejected: Callable[[], Mapping[str, int]] = dict
    """Requests refused before routing, by reason (allowlist, rate, malformed, banned)."""
    sip_connections_refused: Callable[[], Mapping[str, int]] = dict
    """SIP TCP/TLS connections refused at accept, or closed as their source's ban began, by
    reason (banned, unknown source, per-source limit, connection limit)."""
    sip_tls_refused: Callable[[], Mapping[str, int]] = dict
    """Peers we called over TLS and refused, by reason (name, chain, handshake)."""
    pools: Callable[[], Mapping[str, tuple[int, int]]] = dict
    """Per pool id: (numbers leased now, exhaustions so far)."""
    sessions_live: Callable[[], int] = lambda: 0
    numbers_from_memory: Callable[[], bool] = lambda: False
    """Whether calls find their tracking numbers in memory kept by NOTIFY (False: each INVITE
    queries the database, the LISTEN connection lost or the numbers not read again since)."""
    webhook_deliveries: Callable[[], Mapping[str, int]] = dict
    """Delivery attempts by outcome (delivered, failed, gave_up)."""
    journal_lag: Callable[[], float] = lambda: 0.0
    """Seconds the oldest call event not yet written has waited (0 when none waits)."""
    journal_unspooled: Callable[[], int] = lambda: 0
    """Call events the spool could not take (full, or the disk full): in memory only."""
    journal_held: Callable[[], int] = lambda: 0
    """Call events in memory only now (the spool refused them, the database lacks them)."""
    calls_refused: Callable[[], Mapping[str, int]] = dict
    """New calls answered 503 by the front door, by reason (draining, unrecordable,
    capacity)."""
    duties: Callable[[], Mapping[str, bool]] = dict
    """Per once-only duty of the cluster: whether this node does it now."""
    recordings_without_row: Callable[[], Mapping[str, int]] = dict
    """Finalised files the start-up sweep kept without a row, by why (no_call, unreadable)."""


class StateCollector(Collector):
    """Turns :class:`State` into metric families at each scrape."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        s = self.state
        yield _gauge("calls_active", "Calls in progress (routing or answered).", s.calls_active())
        yield _gauge(
            "sip_transactions", "SIP transactions the endpoint holds now.", s.sip_transactions()
        )
        requests = CounterMetricFamily(
            f"{PREFIX}_sip_requests", "SIP requests received, by method.", labels=["method"]
        )
        for method, count in sorted(s.sip_requests().items()):
            requests.add_metric([method], count)
        yield requests
        responses = CounterMetricFamily(
            f"{PREFIX}_sip_responses", "SIP responses sent, by status code.", labels=["code"]
        )
        for code, count in sorted(s.sip_responses().items()):
            responses.add_metric([str(code)], count)
        yield responses
        yield CounterMetricFamily(
            f"{PREFIX}_sip_retransmissions",
            "SIP retransmissions: sent on timers A, E, G and for 2xx, and requests received "
            "again and absorbed by their transaction.",
            value=s.sip_retransmissions(),
        )
        yield _counted(
            "sip_rejected",
            "SIP requests refused before routing, by reason (allowlist, rate, malformed, "
            "banned: dropped unparsed while their source is banned for a flood).",
            "reason",
            ("allowlist", "rate", "malformed", "banned"),
            s.sip_rejected(),
        )
        yield _counted(
            "sip_connections_refused",
            "SIP TCP and TLS connections refused at accept, by reason (unknown_source: outside "
            "every trunk, per_source_limit, connection_limit, banned: its source is banned for "
            "a flood; banned also counts the connections closed as the ban began).",
            "reason",
            ("unknown_source", "per_source_limit", "connection_limit", "banned"),
            {
                reason.replace(" ", "_").replace("-", "_"): count
                for reason, count in s.sip_connections_refused().items()
            },
        )
        yield _counted(
            "sip_tls_refused",
            "Peers called over SIP TLS and refused before any SIP byte, by reason: name (the "
            "certificate names another host), chain (no trusted root: unknown issuer, "
            "self-signed, expired), handshake (anything else).",
            "reason",
            ("name", "chain", "handshake"),
            s.sip_tls_refused(),
        )
        leased = GaugeMetricFamily(
            f"{PREFIX}_pool_leased", "Numbers of a pool leased to visitors now.", labels=["pool"]
        )
        exhaustions = CounterMetricFamily(
            f"{PREFIX}_pool_exhaustions",
            "Times a pool had no free number for a new visitor.",
            labels=["pool"],
        )
        for pool, (now_leased, exhausted) in sorted(s.pools().items()):
            leased.add_metric([pool], now_leased)
            exhaustions.add_metric([pool], exhausted)
        yield leased
        yield exhaustions
        yield _counted(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed: will retry, gave_up).",
            "outcome",
            ("delivered", "failed", "gave_up"),
            s.webhook_deliveries(),
        )
        yield _gauge("sessions_live", "Visitor sessions held in memory.", s.sessions_live())
        yield _gauge(
            "numbers_from_memory",
            "1 when calls find their tracking numbers in memory kept by NOTIFY; 0 when each "
            "INVITE queries the database for its number.",
            1.0 if s.numbers_from_memory() else 0.0,
        )
        yield _gauge(
            "journal_lag_seconds",
            "Age of the oldest call event not yet written to the database.",
            s.journal_lag(),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_journal_unspooled_events",
            "Call and webhook events the spool could not take ([database] spool_max_bytes "
            "reached, or the disk full): held in memory only until the database has them.",
            value=s.journal_unspooled(),
        )
        kept = GaugeMetricFamily(
            f"{PREFIX}_recordings_without_row",
            "Finalised recording files the start-up sweep kept without a row: their call is "
            "gone (no_call) or they cannot be read (unreadable). Never deleted by the sweep.",
            labels=["reason"],
        )
        for reason, count in sorted(s.recordings_without_row().items()):
            kept.add_metric([reason], count)
        yield kept
        yield _gauge(
            "journal_held_events",
            "Call and webhook events held in memory only now (the spool could not take them "
            "and the database does not have them yet); at [database] max_held_events new "
            "calls are refused.",
            s.journal_held(),
        )
        yield _counted(
            "calls_refused",
            "New calls answered 503 with Retry-After, by reason: draining (the server is "
            "stopping), unrecordable (too many call events held in memory only, the database "
            "away), capacity (a per-trunk or per-client cap).",
            "reason",
            ("draining", "unrecordable", "capacity"),
            s.calls_refused(),
        )
        duties = GaugeMetricFamily(
            f"{PREFIX}_cluster_duty",
            "1 when this node does the once-only duty now (one node of the cluster should).",
            labels=["duty"],
        )
        for duty, held in sorted(s.duties().items()):
            duties.add_metric([duty], 1 if held else 0)
        yield duties


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _counted(
    name: str, doc: str, label: str, values: Iterable[str], counts: Mapping[str, int]
) -> CounterMetricFamily:
    """A counter by ``label``, each of ``values`` present (0 until counted), so a dashboard
    and an alert see every series from the start."""
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=[label])
    for value in values:
        family.add_metric([value], counts.get(value, 0))
    return family


@dataclass(eq=False)
class Metrics:
    """Every metric of one server, in one registry.

    :param registry: where they are registered (a fresh one per server, so tests can run
        several servers in one process).
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    state: State = field(default_factory=State)
    _worker_seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.registry
        self.calls = Counter(
            f"{PREFIX}_calls", "Calls finished, by disposition.", ["disposition"], registry=r
        )
        self.post_dial_delay = Histogram(
            f"{PREFIX}_post_dial_delay_seconds",
            "From the caller's INVITE to the first ringing or answer relayed back.",
            buckets=_PDD_BUCKETS,
            registry=r,
        )
        self.recordings = Counter(
            f"{PREFIX}_recordings",
            "Recordings finished by the media worker, by outcome (ready, failed).",
            ["outcome"],
            registry=r,
        )
        self.recording_bytes = Counter(
            f"{PREFIX}_recording_bytes", "Bytes of finished recording files.", registry=r
        )
        self.media_packets = Counter(
            f"{PREFIX}_media_packets",
            "RTP packets relayed by the media worker, by direction (from_caller, "
            "from_destination).",
            ["direction"],
            registry=r,
        )
        self.media_late_packets = Counter(
            f"{PREFIX}_media_late_packets",
            "RTP packets that reached the recorder too late for their place in the audio.",
            registry=r,
        )
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Gauge(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the event loop ran a timer (last sample).",
            registry=r,
        )
        self.database_up = Gauge(
            f"{PREFIX}_database_up", "1 when the database answered the last scrape.", registry=r
        )
        self.media_worker_up = Gauge(
            f"{PREFIX}_media_worker_up",
            "1 when the media worker answered the last scrape, by worker number (worker 0 reads "
            "0 also when none is configured).",
            ["worker"],
            registry=r,
        )
        self.dialog_keepalives = Counter(
            f"{PREFIX}_dialog_keepalives_sent",
            "Dialog keepalive OPTIONS sent, by leg (caller: the carrier's leg of the call; "
            "callee: the destination's).",
            ["leg"],
            registry=r,
        )
        self.dialog_keepalive_outcomes = Counter(
            f"{PREFIX}_dialog_keepalive_outcomes",
            "Dialog keepalive OPTIONS by what their final answer did: answered (2xx), lost "
            "(481: the call ended), no_answer (408 or none before Timer F: the call ended), "
            "other (any other final answer: the call goes on). One sent on a call that ended "
            "first has none.",
            ["leg", "outcome"],
            registry=r,
        )
        for outcome in ("ready", "failed"):
            self.recordings.labels(outcome)
        # Every series from the start, so a dashboard and an alert see them before any counts.
        for leg in _KEEPALIVE_LEGS:
            self.dialog_keepalives.labels(leg)
            for outcome in _KEEPALIVE_OUTCOMES:
                self.dialog_keepalive_outcomes.labels(leg, outcome)
        for direction in ("from_caller", "from_destination"):
            self.media_packets.labels(direction)
        r.register(StateCollector(self.state))

    def worker_totals(self, worker: str, totals: Mapping[str, float]) -> None:
        """Media worker ``worker``'s cumulative counters: add what grew since its last answer
        (all of it when a counter went back, i.e. the worker was restarted)."""
        targets = {
            "packets_from_caller": self.media_packets.labels("from_caller"),
            "packets_from_destination": self.media_packets.labels("from_destination"),
        }
        for name, counter in targets.items():
            value = float(totals.get(name, 0))
            seen = self._worker_seen.get((worker, name), 0.0)
            counter.inc(value - seen if value >= seen else value)
            self._worker_seen[(worker, name)] = value

    def keepalive_observed(self, leg: str, outcome: str | None) -> None:
        """A dialog keepalive sent on ``leg`` (``outcome`` None), or what its answer did."""
        if outcome is None:
            self.dialog_keepalives.labels(leg).inc()
        else:
            self.dialog_keepalive_outcomes.labels(leg, outcome).inc()

    def recording_finished(self, event: Mapping[str, object]) -> None:
        """A ``recording_ready`` or ``recording_failed`` event from the worker."""
        if event.get("event") == "recording_failed":
            self.recordings.labels("failed").inc()
            return
        self.recordings.labels("ready").inc()
        recording = event.get("recording")
        if not isinstance(recording, Mapping):
            return
        size = recording.get("bytes")
        if isinstance(size, int) and size > 0:
            self.recording_bytes.inc(size)
        counters = recording.get("counters")
        if isinstance(counters, Mapping):
            for leg in counters.values():
                late = leg.get("late") if isinstance(leg, Mapping) else None
                if isinstance(late, int) and late > 0:
                    self.media_late_packets.inc(late)


async def watch_event_loop(gauge: Gauge, interval: float = 0.5) -> None:
    """Sample how late the loop wakes a sleeper: a blocked loop delays every call."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(interval)
        gauge.set(max(0.0, loop.time() - asked - interval))
