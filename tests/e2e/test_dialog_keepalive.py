"""Dead calls found by dialog keepalives, through ``callrouter serve`` with SIPp as the carrier
and as the PBX: neither does session timers and nobody hangs up, so only the router's in-dialog
OPTIONS (every second here) can tell that the PBX is gone. The carrier refuses them all with
405, which keeps the call (the refusal proves it holds the dialog); the PBX answers the first
with 200, then answers 481 (it lost the call) or vanishes (no answer: Timer F, made short by a
small T1). The carrier gets BYE and the call row ends saying why and which leg, long before
``max_call_seconds`` (4 h, untouched here), and /metrics counts the OPTIONS and what each
answer did, by leg. With ``[sip] carrier_keepalives`` off, the carrier (on the ``config``
trunk, 127.0.0.0/8) gets none while the PBX still does."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import world_traversable_tempdir
from tests.e2e.router_api import Router
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import call_through


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    workdir = world_traversable_tempdir("callrouter-keepalive-")
    # T1 0.25 s: Timer F (64*T1) is 16 s, within SIPp's 30 s for the carrier's whole call.
    server = ServeProcess(
        workdir / "data", "--sip-dialog-keepalive-seconds", "1", "--sip-t1", "0.25"
    )
    try:
        server.wait_ready()
        yield Router(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def sparing_router() -> Iterator[Router]:
    """A router whose ``config`` trunk, the carrier's, has keepalives off."""
    workdir = world_traversable_tempdir("callrouter-keepalive-off-")
    server = ServeProcess(
        workdir / "data",
        "--sip-dialog-keepalive-seconds",
        "1",
        "--sip-carrier-keepalives",
        "false",
        "--media-workers",
        "0",
    )
    try:
        server.wait_ready()
        yield Router(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def keepalive_counts(router: Router) -> dict[tuple[str, str], float]:
    """The keepalive counters of a /metrics scrape: (leg, "sent" or the outcome) -> count."""
    url = router.server.http_url + "/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "callrouter_dialog_keepalives_sent_total":
                counts[(s.labels["leg"], "sent")] = s.value
            elif s.name == "callrouter_dialog_keepalive_outcomes_total":
                counts[(s.labels["leg"], s.labels["outcome"])] = s.value
    return counts


@pytest.mark.parametrize(
    ("scenario", "reason", "outcome"),
    [
        ("pbx_keepalive_lost.xml", "keepalive: the callee lost the dialog (481)", "lost"),
        ("pbx_keepalive_vanishes.xml", "keepalive: no answer from the callee", "no_answer"),
    ],
)
def test_a_pbx_gone_without_a_bye_ends_the_call(
    router: Router, tmp_path: Path, scenario: str, reason: str, outcome: str
) -> None:
    before = keepalive_counts(router)
    # Every series is there before any call: the alert rule sees zeros, not nothing.
    assert len(before) == 2 * (1 + 4)
    # The carrier's scenario ends only after the router's BYE (refusing keepalives till then).
    e164 = call_through(
        router.port, router.number, scenario, "carrier_refuses_keepalives.xml", tmp_path
    )
    call = router.ended_call(e164)
    assert (call["disposition"], call["hangup_by"], call["hangup_reason"]) == (
        "answered",
        "system",
        reason,
    )
    assert call["answered_at"] is not None and call["ended_at"] is not None
    # The call's end was logged after its actions ran: the counters have moved already.
    after = keepalive_counts(router)
    grew = {key: after[key] - before[key] for key in before}
    # The PBX answered the first OPTIONS with 200, then the one that ended the call; the
    # carrier refused at least the first with 405, which kept the call.
    assert grew[("callee", "sent")] >= 2 and grew[("caller", "sent")] >= 1
    assert grew[("callee", "answered")] == 1 and grew[("callee", outcome)] == 1
    assert grew[("caller", "other")] >= 1
    ends = ("lost", "no_answer")
    assert sum(grew[(leg, end)] for leg in ("caller", "callee") for end in ends) == 1
    for leg in ("caller", "callee"):
        answered = sum(grew[(leg, o)] for o in ("answered", "lost", "no_answer", "other"))
        assert answered <= grew[(leg, "sent")]


def test_carrier_keepalives_off_spares_the_carrier_and_still_watches_the_pbx(
    sparing_router: Router, tmp_path: Path
) -> None:
    before = keepalive_counts(sparing_router)
    # This carrier scenario expects nothing but the router's BYE: an OPTIONS would fail it.
    e164 = call_through(
        sparing_router.port,
        sparing_router.number,
        "pbx_keepalive_lost.xml",
        "carrier_session_interval.xml",
        tmp_path,
    )
    call = sparing_router.ended_call(e164)
    assert call["hangup_reason"] == "keepalive: the callee lost the dialog (481)"
    after = keepalive_counts(sparing_router)
    assert after[("caller", "sent")] == before[("caller", "sent")]
    assert after[("callee", "sent")] - before[("callee", "sent")] >= 2
    assert after[("callee", "lost")] - before[("callee", "lost")] == 1
