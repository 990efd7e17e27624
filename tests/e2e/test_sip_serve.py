"""``callrouter serve`` on SIP: SIPp sends what carriers send and checks each answer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, request_scenario, run_sipp


@contextmanager
def serving(*args: str) -> Iterator[ServeProcess]:
    workdir = world_traversable_tempdir("callrouter-sip-")
    server = ServeProcess(workdir / "data", *args)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def router() -> Iterator[ServeProcess]:
    with serving() as server:
        yield server


def assert_passed(result: object) -> None:
    assert getattr(result, "returncode", None) == 0, (
        getattr(result, "stdout", "")[-3000:] + getattr(result, "stderr", "")[-3000:]
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_gets_200_with_allow_and_no_banner(
    router: ServeProcess, tmp_path: Path, transport: str
) -> None:
    port = router.sip_port(transport)
    assert_passed(run_sipp(SCENARIOS / "options.xml", port, tmp_path, transport=transport))
    # What serve relays inside dialogs, and session timers (RFC 4028), are advertised too.
    relayed = request_scenario(
        "OPTIONS",
        200,
        checks=("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO", "Supported: timer"),
    )
    assert_passed(run_sipp(relayed, port, tmp_path, transport=transport))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_invite_for_a_number_that_is_not_ours_gets_404(
    router: ServeProcess, tmp_path: Path, transport: str
) -> None:
    scenario = request_scenario("INVITE", 404)
    port = router.sip_port(transport)
    assert_passed(run_sipp(scenario, port, tmp_path, transport=transport, service="+15555550100"))


REFUSALS = [
    ("SUBSCRIBE", 405, "", ("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO",)),
    # Session timers are supported (RFC 4028): only 100rel is refused.
    ("OPTIONS", 420, "      Require: 100rel, timer\n", ("Unsupported: 100rel[^,]",)),
    ("UPDATE", 481, "", ()),  # relayed inside dialogs; outside one there is none (RFC 3311)
    (
        "INVITE",
        422,
        "      Supported: timer\n      Session-Expires: 60\n",
        ("Min-SE: 90",),
    ),
    ("INVITE", 483, "      Max-Forwards: 0\n", ()),
    ("BYE", 481, "", ()),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[f"{m}-{s}" for m, s, _, _ in REFUSALS])
def test_unsupported_requests_get_the_right_code(
    router: ServeProcess, tmp_path: Path, case: tuple[str, int, str, tuple[str, ...]]
) -> None:
    method, status, headers, checks = case
    scenario = request_scenario(method, status, headers=headers, checks=checks)
    if "Max-Forwards: 0" in headers:
        scenario = scenario.replace("      Max-Forwards: 70\n", "")
    assert_passed(run_sipp(scenario, router.sip_port(), tmp_path))


def test_a_source_outside_the_carrier_allowlist_gets_403(tmp_path: Path) -> None:
    with serving("--sip-carriers", "192.0.2.0/24") as server:
        assert_passed(run_sipp(request_scenario("OPTIONS", 403), server.sip_port(), tmp_path))
