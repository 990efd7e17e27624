"""Dead calls found by dialog keepalives, through ``callrouter serve`` with SIPp as the carrier
and as the PBX: neither does session timers and nobody hangs up, so only the router's in-dialog
OPTIONS (every second here) can tell that the PBX is gone. The carrier refuses them all with
405, which keeps the call (the refusal proves it holds the dialog); the PBX answers the first
with 200, then answers 481 (it lost the call) or vanishes (no answer: Timer F, made short by a
small T1). The carrier gets BYE and the call row ends saying why and which leg, long before
``max_call_seconds`` (4 h, untouched here)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("pbx_keepalive_lost.xml", "keepalive: the callee lost the dialog (481)"),
        ("pbx_keepalive_vanishes.xml", "keepalive: no answer from the callee"),
    ],
)
def test_a_pbx_gone_without_a_bye_ends_the_call(
    router: Router, tmp_path: Path, scenario: str, reason: str
) -> None:
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
