"""A connected call that neither side ever hangs up, through ``callrouter serve`` with SIPp as
the carrier and as the PBX: the router ends it on both legs and records why.

The carrier asks for a 90 s session interval without supporting timers itself and the PBX does
not do timers, so the call has no session timer (RFC 4028 §8.2) and falls under
``max_call_seconds``, set to a few seconds here. Session timers themselves, whose shortest
interval is 90 s, are timed on the controller's fake clock (tests/routing/test_session_timers.py).
"""

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
    workdir = world_traversable_tempdir("callrouter-lifetime-")
    server = ServeProcess(workdir / "data", "--sip-max-call-seconds", "2")
    try:
        server.wait_ready()
        yield Router(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_call_nobody_hangs_up_gets_bye_on_both_legs_and_its_row_ends(
    router: Router, tmp_path: Path
) -> None:
    # Both scenarios end only after receiving the router's BYE and answering it.
    e164 = call_through(
        router.port,
        router.number,
        "pbx_answer_without_timers.xml",
        "carrier_session_interval.xml",
        tmp_path,
    )
    call = router.ended_call(e164)
    assert (call["disposition"], call["hangup_by"], call["hangup_reason"]) == (
        "answered",
        "system",
        "max call seconds",
    )
    assert call["answered_at"] is not None and call["ended_at"] is not None
