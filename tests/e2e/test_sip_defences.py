"""SIP defences of ``callrouter serve`` under attack tools: a flood, SIPVicious, concurrency caps.

The router trusts 127.0.0.1 and 127.0.0.2 (its trunk); 127.0.0.3 and up are strangers on the
internet. Legitimate calls come from SIPp on 127.0.0.2 to a SIPp PBX on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import world_traversable_tempdir
from tests.e2e.blaster import blast
from tests.e2e.router_api import Router
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import (
    SCENARIOS,
    SIPP_TIMEOUT,
    free_port,
    request_scenario,
    run_sipp,
    sipp_command,
)

CARRIERS = "127.0.0.1/32, 127.0.0.2/32"
SVTOOLS = Path(sys.executable).parent
BANNER = re.compile(r"\\r\\n(server|user-agent):|callrouter|twisted|python|aiohttp", re.I)
"""What would name the product in a captured answer (svmap -d prints them as Python bytes)."""


@contextmanager
def serving(*args: str) -> Iterator[Router]:
    workdir = world_traversable_tempdir("callrouter-defences-")
    server = ServeProcess(workdir / "data", "--sip-carriers", CARRIERS, *args)
    try:
        server.wait_ready()
        yield Router(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def guarded() -> Iterator[Router]:
    """Strangers hear nothing; a client may have one call up at a time, the trunk two."""
    with serving(
        "--sip-unknown-sources",
        "drop",
        "--sip-max-calls-per-client",
        "1",
        "--sip-max-calls-per-trunk",
        "2",
    ) as server:
        yield server


def pbx(
    tmp_path: Path, calls: int, scenario: str = "pbx_answer.xml", host: str = "127.0.0.1"
) -> tuple[subprocess.Popen[str], str]:
    """A SIPp PBX on ``host`` answering ``calls`` calls, and its URI."""
    port = free_port()
    command = sipp_command(SCENARIOS / scenario, 0, tmp_path, calls=calls, local_ip=host)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(port)
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return process, f"sip:desk@{host}:{port}"


def test_a_flood_from_one_source_does_not_starve_another_sources_calls(
    router: Router, tmp_path: Path
) -> None:
    calls = 200
    (tmp_path / "pbx").mkdir()
    (tmp_path / "carrier").mkdir()
    desk, uri = pbx(tmp_path / "pbx", calls)
    try:
        e164 = router.number(uri)
        carrier = subprocess.Popen(
            sipp_command(
                "uac",
                router.port,
                tmp_path / "carrier",
                service=e164,
                calls=calls,
                local_ip="127.0.0.2",
                extra=("-r", "10"),
            ),
            cwd=tmp_path / "carrier",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # The flood starts once calls are flowing, so it lands in the middle of them.
        router.server.wait_for(rf"call: \S+ to \{e164} ended answered")
        flood = blast("127.0.0.3", ("127.0.0.1", router.port), 20_000)
        output, _ = carrier.communicate(timeout=SIPP_TIMEOUT)
    finally:
        if desk.poll() is None:
            desk.kill()
        desk.communicate()
    # SIPp's own count: a call succeeds when it got its 200 and its BYE was answered.
    succeeded = re.search(r"Successful call +\| +\d+ +\| +(\d+)", output)
    assert succeeded is not None, output[-3000:]
    answered = int(succeeded.group(1))
    print(
        f"\nflood: {flood.sent} packets in {flood.seconds:.2f} s ({flood.rate:,.0f}/s) from "
        f"127.0.0.3, {len(flood.answers)} answered; legitimate calls completed "
        f"{answered}/{calls} ({100 * answered / calls:.1f} %)"
    )
    assert answered / calls >= 0.995, output[-3000:] + router.server.output[-3000:]
    router.server.wait_for(r"sip: banned 127\.0\.0\.3 for 300 s: more than 16 requests in 2 s")
    # The 16 requests before the ban got one stateless 403 each; the other 19,984 nothing.
    assert 1 <= len(flood.answers) <= 16
    assert all(a.startswith(b"SIP/2.0 403 ") for a in flood.answers)


def sv(tool: str, source: str, port: int, *args: str) -> str:
    """Run a SIPVicious tool from ``source`` against the router; its whole output."""
    result = subprocess.run(
        [str(SVTOOLS / f"sipvicious_{tool}"), "-b", source, "-p", str(port), *args, "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


def test_sipvicious_from_an_allowed_source_learns_no_product_or_version(
    router: Router, tmp_path: Path
) -> None:
    found = sv("svmap", "127.0.0.2", router.port, "-d")
    # That it is a SIP server is no secret; what it runs is.
    assert re.search(rf"\| 127\.0\.0\.1:{router.port} +\| unknown +\|", found), found
    assert not BANNER.search(found), found

    wordlist = tmp_path / "words"
    wordlist.write_text("secret\npassword\n1234\n")
    # REGISTER is refused with 405 and nothing ever asks for credentials: no digest to guess.
    cracked = sv("svcrack", "127.0.0.2", router.port, "-u", "1000", "-d", str(wordlist))
    assert "found nothing" in cracked and "|" not in cracked, cracked
    # Nor is there a REGISTER (or INVITE) answer that tells extensions apart.
    for method in ("REGISTER", "INVITE"):
        enumerated = sv("svwar", "127.0.0.2", router.port, "-e", "100-110", "-m", method)
        assert "found nothing" in enumerated and "|" not in enumerated, enumerated


def test_sipvicious_from_a_stranger_gets_one_403_and_no_more(router: Router) -> None:
    found = sv("svmap", "127.0.0.4", router.port, "-d")
    assert found.count("SIP/2.0 403 Forbidden") == 1, found
    assert not BANNER.search(found), found


def test_in_drop_mode_sipvicious_from_a_stranger_finds_nothing(guarded: Router) -> None:
    found = sv("svmap", "127.0.0.4", guarded.port, "-d")
    assert "SIP/2.0" not in found and "127.0.0.1:" not in found, found
    assert "found nothing" in found, found
    swept = sv("svwar", "127.0.0.4", guarded.port, "-e", "100-102", "-m", "INVITE")
    assert "SIP/2.0" not in swept and "|" not in swept, swept


def test_calls_over_the_client_and_trunk_caps_get_503_with_retry_after(
    guarded: Router, tmp_path: Path
) -> None:
    for name in ("pbx", "first", "second", "refused"):
        (tmp_path / name).mkdir()
    desk, uri = pbx(tmp_path / "pbx", 2)
    first, same_client = guarded.number(uri), guarded.number(uri)
    second = guarded.number(uri, guarded.client("Beta"))
    third = guarded.number(uri, guarded.client("Gamma"))
    up: list[subprocess.Popen[str]] = []

    def hold(e164: str, folder: str) -> None:
        """A call that stays up for 4 s once answered."""
        command = sipp_command(
            "uac", guarded.port, tmp_path / folder, service=e164, extra=("-d", "4000")
        )
        up.append(
            subprocess.Popen(
                command,
                cwd=tmp_path / folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        guarded.wait_for_call(e164)

    def refused(e164: str) -> None:
        busy = request_scenario("INVITE", 503, checks=(r"Retry-After: 5",))
        result = run_sipp(busy, guarded.port, tmp_path / "refused", service=e164)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    try:
        hold(first, "first")
        refused(same_client)  # Acme has its one call
        hold(second, "second")  # Beta may: the trunk carries one call so far
        refused(third)  # Gamma may not: the trunk carries two
        for call in up:
            output, _ = call.communicate(timeout=SIPP_TIMEOUT)
            assert call.returncode == 0, output[-2000:]
    finally:
        for process in (*up, desk):
            if process.poll() is None:
                process.kill()
            process.communicate()


def test_a_destination_outside_every_trunk_still_hangs_up_its_call(
    guarded: Router, tmp_path: Path
) -> None:
    """In drop mode strangers hear nothing, but the PBX the router called (127.0.0.5, in no
    trunk) is no stranger inside its own dialog: its BYE ends the call."""
    (tmp_path / "pbx").mkdir()
    desk, uri = pbx(tmp_path / "pbx", 1, "pbx_hangs_up.xml", host="127.0.0.5")
    try:
        e164 = guarded.number(uri, guarded.client("Delta"))
        result = run_sipp(
            SCENARIOS / "carrier_callee_hangs_up.xml", guarded.port, tmp_path, service=e164
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        output, _ = desk.communicate(timeout=SIPP_TIMEOUT)
        assert desk.returncode == 0, output[-2000:]
        guarded.server.wait_for(rf"call: \S+ to \{e164} ended answered", 30)
    finally:
        if desk.poll() is None:
            desk.kill()
        desk.communicate()
