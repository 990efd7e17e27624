"""The metrics registry: plain state read at scrape time, the worker's totals made monotonic."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callrouter.metrics import Metrics
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.events import Flow
from callrouter.sip.message import Response
from callrouter.sip.transactions import Timers
from tests.sip.messages import invite

CARRIER = Flow("udp", "192.0.2.10", 5060)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_totals_never_go_down_across_a_worker_restart() -> None:
    metrics = Metrics()
    metrics.worker_totals("0", {"packets_from_caller": 100, "packets_from_destination": 40})
    metrics.worker_totals("0", {"packets_from_caller": 150, "packets_from_destination": 40})
    metrics.worker_totals("0", {"packets_from_caller": 7, "packets_from_destination": 3})  # new
    got = samples(metrics)
    assert got[("callrouter_media_packets_total", (("direction", "from_caller"),))] == 157
    assert got[("callrouter_media_packets_total", (("direction", "from_destination"),))] == 43


def test_each_worker_counts_apart_so_one_restart_takes_nothing_from_another() -> None:
    metrics = Metrics()
    metrics.worker_totals("0", {"packets_from_caller": 100})
    metrics.worker_totals("1", {"packets_from_caller": 30})
    metrics.worker_totals("0", {"packets_from_caller": 120})
    metrics.worker_totals("1", {"packets_from_caller": 5})  # worker 1 restarted
    got = samples(metrics)
    assert got[("callrouter_media_packets_total", (("direction", "from_caller"),))] == 155


def test_finished_recordings_count_outcome_bytes_and_late_packets() -> None:
    metrics = Metrics()
    counters = {"a": {"placed": 10, "late": 2}, "b": {"placed": 9, "late": 1}}
    ready = {"event": "recording_ready", "recording": {"bytes": 5000, "counters": counters}}
    metrics.recording_finished(ready)
    metrics.recording_finished({"event": "recording_failed", "recording": "x", "error": "disk"})
    recovered = {"event": "recording_ready", "recording": {"bytes": 10, "counters": None}}
    metrics.recording_finished(recovered)
    got = samples(metrics)
    assert got[("callrouter_recordings_total", (("outcome", "ready"),))] == 2
    assert got[("callrouter_recordings_total", (("outcome", "failed"),))] == 1
    assert got[("callrouter_recording_bytes_total", ())] == 5010
    assert got[("callrouter_media_late_packets_total", ())] == 3


def test_keepalives_are_counted_by_leg_and_outcome_every_series_there_from_the_start() -> None:
    metrics = Metrics()
    sent = "callrouter_dialog_keepalives_sent_total"
    outcomes = "callrouter_dialog_keepalive_outcomes_total"
    got = samples(metrics)
    legs = ("caller", "callee")
    assert {k: v for k, v in got.items() if k[0] == sent} == {
        (sent, (("leg", leg),)): 0 for leg in legs
    }
    ends = ("answered", "lost", "no_answer", "other")
    assert {k: v for k, v in got.items() if k[0] == outcomes} == {
        (outcomes, (("leg", leg), ("outcome", end))): 0 for leg in legs for end in ends
    }
    for leg, outcome in [("caller", None), ("callee", None), ("callee", None)]:
        metrics.keepalive_observed(leg, outcome)
    metrics.keepalive_observed("caller", "other")
    metrics.keepalive_observed("callee", "no_answer")
    got = samples(metrics)
    assert got[(sent, (("leg", "caller"),))] == 1 and got[(sent, (("leg", "callee"),))] == 2
    assert got[(outcomes, (("leg", "caller"), ("outcome", "other")))] == 1
    assert got[(outcomes, (("leg", "callee"), ("outcome", "no_answer")))] == 1
    assert got[(outcomes, (("leg", "callee"), ("outcome", "answered")))] == 0


def test_the_sip_cores_plain_counters_reach_the_scrape() -> None:
    endpoint = SipEndpoint({"udp": "198.51.100.1:5060"}, Timers())
    metrics = Metrics()
    metrics.state.sip_requests = lambda: endpoint.counters.requests
    metrics.state.sip_responses = lambda: endpoint.counters.responses
    metrics.state.sip_retransmissions = lambda: endpoint.counters.retransmissions
    metrics.state.sip_transactions = lambda: endpoint.transaction_count
    data = invite().to_bytes()
    endpoint.receive(data, CARRIER, 0.0)
    endpoint.receive(data, CARRIER, 0.4)  # the carrier did not hear our 100 yet
    received = endpoint.next_event()
    assert received is not None
    tid = received.transaction_id  # type: ignore[union-attr]
    busy = received.request.response(486, to_tag="t1")  # type: ignore[union-attr]
    assert isinstance(busy, Response)
    endpoint.respond(tid, busy, 0.5)
    endpoint.handle_timers(1.0)  # timer G: the 486 again, no ACK yet
    got = samples(metrics)
    assert got[("callrouter_sip_requests_total", (("method", "INVITE"),))] == 2
    assert got[("callrouter_sip_responses_total", (("code", "100"),))] == 2
    assert got[("callrouter_sip_responses_total", (("code", "486"),))] == 2
    assert got[("callrouter_sip_retransmissions_total", ())] == 2
    assert got[("callrouter_sip_transactions", ())] == 1
    for reason in ("allowlist", "rate", "malformed"):
        assert got[("callrouter_sip_rejected_total", (("reason", reason),))] == 0


def test_two_servers_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.calls.labels("answered").inc()
    assert samples(first)[("callrouter_calls_total", (("disposition", "answered"),))] == 1
    assert ("callrouter_calls_total", (("disposition", "answered"),)) not in samples(second)
