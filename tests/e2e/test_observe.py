"""Operating ``callrouter serve`` with eyes open: /metrics moves with real SIP traffic, the
contrib dashboard and alert rules name only metrics a real scrape has, and the JSON log carries
the access log and the events tools read."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import world_traversable_tempdir
from tests.e2e.raw_http import exchange
from tests.e2e.router_api import Router as RouterApi
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, free_port, request_scenario, run_sipp, sipp_command

CONTRIB = Path(__file__).parents[2] / "contrib"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Observed(RouterApi):
    """A running server, its API as the operator, and its metrics."""

    def __init__(self, server: ServeProcess) -> None:
        super().__init__(server)
        self.metrics_url = server.wait_for(r"metrics: (\S+)").group(1)

    def scrape_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode())

    def scrape(self) -> Samples:
        """Every sample by (name, sorted labels)."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(self.scrape_text())
            for s in family.samples
        }


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    workdir = world_traversable_tempdir("callrouter-observe-")
    (workdir / "dialplans").mkdir()
    server = ServeProcess(
        workdir / "data",
        "--dialplans-dir",
        str(workdir / "dialplans"),
        "--sip-target-timeout",
        "1",
        # The hung-worker test waits this out on every scrape and readiness check (default 2 s).
        "--metrics-check-timeout",
        "1",
    )
    try:
        server.wait_ready()
        yield Observed(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_move_by_what_a_sipp_run_did(observed: Observed, tmp_path: Path) -> None:
    calls = 6
    pbx_port = free_port()
    pbx_dir = tmp_path / "pbx"
    pbx_dir.mkdir()
    command = sipp_command(SCENARIOS / "pbx_answer.xml", 0, pbx_dir, calls=calls)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(pbx_port)
    pbx = subprocess.Popen(command, cwd=pbx_dir, stdout=subprocess.PIPE, text=True)
    e164 = "+441515556001"
    observed.api(
        "POST",
        "/v1/numbers",
        {
            "client_id": observed.client_id,
            "e164": e164,
            "destination": f"sip:desk@127.0.0.1:{pbx_port}",
        },
    )
    before = observed.scrape()
    carrier_dir = tmp_path / "carrier"
    carrier_dir.mkdir()
    # Two calls a second, each held a second: calls are up during most of the run.
    carrier = subprocess.Popen(
        sipp_command(
            "uac",
            observed.port,
            carrier_dir,
            service=e164,
            calls=calls,
            extra=("-r", "2", "-d", "1000"),
        ),
        cwd=carrier_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    busiest = 0.0
    try:
        # Scrape during the run, until SIPp ends (bounded by its own -timeout 30s).
        while carrier.poll() is None:
            busiest = max(busiest, value(observed.scrape(), "callrouter_calls_active"))
        output = carrier.communicate(timeout=60)[0]
        assert carrier.returncode == 0, output[-3000:]
        assert pbx.wait(timeout=60) == 0
    finally:
        for process in (carrier, pbx):
            if process.poll() is None:
                process.kill()
            process.communicate()
    ended = observed.server.wait_events("call.ended", calls, tracking_number=e164)
    assert len({r["call_id"] for r in ended}) == calls
    assert all(r["disposition"] == "answered" and r["sip_call_id"] for r in ended)

    # An INVITE for a number that is not ours, and bytes that are not SIP.
    passed = run_sipp(request_scenario("INVITE", 404), observed.port, tmp_path, service="+4400")
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-2000:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as garbage:
        garbage.sendto(b"NOT SIP AT ALL\r\n\r\n", ("127.0.0.1", observed.port))
    after = _scrape_until(
        observed, lambda s: grew(before, s, "callrouter_sip_rejected_total", reason="malformed")
    )

    assert busiest >= 1
    assert value(after, "callrouter_calls_active") == 0
    # The calls found their number in memory, kept by NOTIFY, not by a query each.
    assert value(after, "callrouter_numbers_from_memory") == 1
    assert grew(before, after, "callrouter_calls_total", disposition="answered") == calls
    assert grew(before, after, "callrouter_post_dial_delay_seconds_count") == calls
    assert grew(before, after, "callrouter_post_dial_delay_seconds_sum") > 0
    retransmitted = grew(before, after, "callrouter_sip_retransmissions_total")
    invites = grew(before, after, "callrouter_sip_requests_total", method="INVITE")
    assert calls + 1 <= invites <= calls + 1 + retransmitted
    byes = grew(before, after, "callrouter_sip_requests_total", method="BYE")
    assert calls <= byes <= calls + retransmitted
    assert grew(before, after, "callrouter_sip_responses_total", code="404") == 1
    # Each call's 200 OK to the INVITE and to the BYE (more when retransmitted).
    assert grew(before, after, "callrouter_sip_responses_total", code="200") >= 2 * calls
    assert grew(before, after, "callrouter_sip_rejected_total", reason="malformed") == 1
    assert grew(before, after, "callrouter_sip_rejected_total", reason="allowlist") == 0
    assert value(after, "callrouter_database_up") == 1
    assert value(after, "callrouter_media_worker_up", worker="0") == 1
    assert value(after, "callrouter_journal_lag_seconds") >= 0
    assert ("callrouter_event_loop_lag_seconds", ()) in after


def _scrape_until(observed: Observed, moved: Any, timeout: float = 30.0) -> Samples:
    """Scrape until ``moved(samples)`` is true (a datagram is handled after it is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = observed.scrape()
        if moved(samples) or time.monotonic() > deadline:
            return samples


def metric_names_in(text: str) -> set[str]:
    """The callrouter_* names an expression or panel uses, without histogram suffixes."""
    names = set(re.findall(r"\bcallrouter_[a-z_]+\b", text))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_contrib_dashboard_and_alerts_name_only_metrics_the_server_exports(
    observed: Observed, tmp_path: Path
) -> None:
    families = list(text_string_to_metric_families(observed.scrape_text()))
    # A labelled family with no samples yet (no pool exists) still declares its name.
    declared = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    scraped = declared | {s.name for f in families for s in f.samples}
    dashboard = json.loads((CONTRIB / "grafana" / "callrouter.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 10
    rules_path = CONTRIB / "prometheus" / "callrouter-alerts.yml"
    rules = yaml.safe_load(rules_path.read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"CallrouterPoolExhausted", "CallrouterJournalLagging"} <= set(alerts)
    assert {"CallrouterRefusingUnrecordableCalls", "CallrouterCallEventsAtRisk"} <= set(alerts)
    assert {"CallrouterMediaWorkerDown", "CallrouterSip5xxRate", "CallrouterHttp5xxRate"} <= set(
        alerts
    )
    assert "CallrouterCallsEndedByKeepalives" in alerts
    used = metric_names_in(" ".join(expressions + list(alerts.values())))
    missing = sorted(used - scraped)
    assert not missing, missing
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is not installed"
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_with_a_judged_threshold_fire_on_what_they_are_for() -> None:
    """promtool's unit tests of the rules (series in, alerts out): a PBX down with four calls
    on it fires, one call lost now and then does not."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is not installed"
    tested = subprocess.run(
        [promtool, "test", "rules", "callrouter-alerts.test.yml"],
        cwd=CONTRIB / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_access_log_names_route_status_and_key_never_the_key_or_body(
    observed: Observed,
) -> None:
    server = observed.server
    secret_name = "observed-body-value-7f3a"
    created = observed.api(
        "POST", "/v1/keys", {"client_id": observed.client_id, "name": secret_name}
    )
    request = urllib.request.Request(
        server.http_url + f"/v1/clients/{observed.client_id}",
        headers={"Authorization": f"Bearer {created['secret']}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    record = server.wait_event(
        "http.request", route="/v1/clients/{client_id}", key_id=created["id"]
    )
    assert (record["method"], record["status"]) == ("GET", 200)
    assert record["duration_ms"] >= 0 and record["time"].endswith("Z")

    bad = urllib.request.Request(
        server.http_url + "/v1/clients", headers={"Authorization": "Bearer not-a-real-key-9c1d"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=30)
    refused.value.close()
    assert refused.value.code == 401
    failed = server.wait_event("auth.failed", reason="unknown or revoked key")
    assert failed["level"] == "WARNING"
    server.wait_event("http.request", route="/v1/clients", status=401, key_id=None)

    observed.api("DELETE", f"/v1/keys/{created['id']}")
    server.wait_event("key.revoked", key_id=created["id"])
    server.wait_event("key.refused_from_now", key_id=created["id"])
    # A revocation from the command line reaches the running server's log too.
    other = observed.api("POST", "/v1/keys", {"client_id": observed.client_id, "name": "cli"})
    revoked = subprocess.run(
        [
            *(sys.executable, "-m", "callrouter", "keys", "revoke", other["id"]),
            *("--data-dir", str(server.data_dir)),
        ],
        cwd=server.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
    )
    assert revoked.returncode == 0, revoked.stderr
    server.wait_event("key.refused_from_now", key_id=other["id"])

    scrape = observed.scrape()
    assert (
        value(
            scrape,
            "callrouter_http_requests_total",
            method="GET",
            route="/v1/clients/{client_id}",
            status="200",
        )
        >= 1
    )
    for never in (created["secret"], "not-a-real-key-9c1d", secret_name):
        assert never not in server.output


def run_probe(
    observed: Observed, number: str, *args: str, ring_timeout: float = 20.0
) -> tuple[int, dict[str, Any]]:
    """``callrouter probe NUMBER --json`` against the running server; its exit status and report."""
    server = observed.server
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "callrouter",
            "probe",
            number,
            "--json",
            "--ring-timeout",
            str(ring_timeout),
            "--data-dir",
            str(server.data_dir),
            "--sip-port",
            str(observed.port),
            *args,
        ],
        cwd=server.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
    )
    # stdout is the report alone (pjlib's own start-up lines go to stderr).
    return result.returncode, json.loads(result.stdout)


def add_number(observed: Observed, e164: str, destination: str | None, **fields: Any) -> None:
    observed.api(
        "POST",
        "/v1/numbers",
        {"client_id": observed.client_id, "e164": e164, "destination": destination, **fields},
    )


def test_probe_with_answer_proves_the_whole_path(observed: Observed) -> None:
    e164 = "+441515556101"
    original = "sip:reception@192.0.2.10"
    add_number(observed, e164, original, label="probe", source="monitor")
    code, report = run_probe(observed, e164, "--answer")
    assert code == 0, report
    assert (report["ok"], report["reason"], report["status"]) == (True, "", 200)
    assert report["audio_to_caller"] is True and report["audio_to_destination"] is True
    assert report["post_dial_delay_seconds"] > 0
    assert report["call_written"] and report["disposition"] == "answered"
    assert report["attribution_written"]
    assert report["attribution"] == {"label": "probe", "source": "monitor"}
    ended = observed.server.wait_event("call.ended", call_id=report["call_id"])
    assert ended["sip_call_id"] == report["sip_call_id"]
    # The temporary destination is gone: the number routes where it did before.
    (number,) = observed.api("GET", "/v1/numbers?e164=" + e164.replace("+", "%2B"))["data"]
    assert number["destination"] == original


def test_probe_fails_clearly_for_an_unknown_number(observed: Observed) -> None:
    code, report = run_probe(observed, "+441515556199", "--answer")
    assert code == 1
    assert report["ok"] is False and report["status"] == 404
    assert "+441515556199 is not a tracking number here" in report["reason"]
    assert report["call_written"] is False


def test_probe_fails_clearly_when_the_destination_does_not_answer(observed: Observed) -> None:
    e164 = "+441515556102"
    add_number(observed, e164, f"sip:nobody@127.0.0.1:{free_port()}")
    code, report = run_probe(observed, e164, ring_timeout=4)
    assert code == 1
    assert report["ok"] is False
    assert report["reason"].startswith("the call was not answered within the ring timeout")
    assert report["status"] < 200 and report["audio_to_caller"] is None
    assert report["call_written"] and report["disposition"] != "answered"


def get_ready(observed: Observed) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(observed.server.http_url + "/v1/ready", timeout=30) as got:
            return got.status, json.loads(got.read())
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.loads(refused.read())


def test_a_hung_media_worker_makes_the_server_not_ready_and_shows_in_metrics(
    observed: Observed,
) -> None:
    assert get_ready(observed) == (
        200,
        {
            "ready": True,
            "components": {
                "database": "up",
                "media": "up",
                "recording_space": "up",
                "journal": "up",
                "sip": "up",
            },
        },
    )
    pid = int(observed.server.wait_for(r"media: worker 0 pid (\d+)").group(1))
    os.kill(pid, signal.SIGSTOP)  # hung, not dead: the supervisor sees nothing to restart
    try:
        status, ready = get_ready(observed)
        assert (status, ready["ready"], ready["components"]["media"]) == (503, False, "down")
        assert ready["components"]["database"] == "up"
        assert value(observed.scrape(), "callrouter_media_worker_up", worker="0") == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert value(observed.scrape(), "callrouter_media_worker_up", worker="0") == 1
    assert get_ready(observed)[0] == 200


def test_a_separate_metrics_listener_serves_metrics_and_the_api_port_does_not() -> None:
    workdir = world_traversable_tempdir("callrouter-metrics-")
    port = free_port()
    server = ServeProcess(workdir / "data", "--metrics-port", str(port), "--media-workers", "0")
    try:
        server.wait_ready()
        url = server.wait_for(r"metrics: (\S+)").group(1)
        assert url == f"http://127.0.0.1:{port}/metrics"
        # What aiohttp cannot parse is refused as on the API's port, and scrapes go on.
        sent = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n"
        answer = exchange(port, sent)
        assert answer.status == 400
        assert [e["field"] for e in answer.problem()["errors"]] == ["Content-Length"]
        with urllib.request.urlopen(url, timeout=30) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        assert families["callrouter_database_up"].samples[0].value == 1
        # No media worker configured: it is not up, and the alert on it is the operator's call.
        assert families["callrouter_media_worker_up"].samples[0].value == 0
        with urllib.request.urlopen(server.http_url + "/v1/ready", timeout=30) as response:
            # No worker configured: readiness does not ask for one.
            assert "media" not in json.loads(response.read())["components"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.http_url + "/metrics", timeout=30)
        refused.value.close()
        assert refused.value.code == 404
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_suppressed_callers_number_is_never_logged(observed: Observed, tmp_path: Path) -> None:
    caller = "+447700900123"  # what carrier_callee_hangs_up.xml sends in From
    objection = observed.api(
        "POST",
        "/v1/privacy/requests",
        {"client_id": observed.client_id, "kind": "objection", "subject": {"phone": caller}},
    )
    assert objection["status"] == "done"
    pbx_port = free_port()
    e164 = "+441515556103"
    add_number(observed, e164, f"sip:desk@127.0.0.1:{pbx_port}")
    command = sipp_command(SCENARIOS / "pbx_hangs_up.xml", 0, tmp_path)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(pbx_port)
    pbx = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        carrier = run_sipp(
            SCENARIOS / "carrier_callee_hangs_up.xml", observed.port, tmp_path, service=e164
        )
        assert carrier.returncode == 0, carrier.stdout[-2000:] + carrier.stderr[-2000:]
        assert pbx.wait(timeout=60) == 0
    finally:
        if pbx.poll() is None:
            pbx.kill()
        pbx.communicate()
    ended = observed.server.wait_event("call.ended", tracking_number=e164)
    assert ended["disposition"] == "answered"
    # The request that named the number was logged by route, never by body.
    observed.server.wait_event("http.request", route="/v1/privacy/requests", status=201)
    assert e164 in observed.server.output  # the search below reads the whole log
    for spelling in (caller, caller.removeprefix("+"), "7700900123"):
        assert spelling not in observed.server.output
