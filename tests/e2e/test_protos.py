"""The PROTOS c07-sip INVITE suite (4,527 malformed and hostile INVITEs) against ``serve``.

Each case is sent as the tester would (the INVITE, then its CANCEL) from a carrier address, with
the rate limits and flood bans opened up so that every case reaches the parser, the
transaction layer and the front door. The server passes when every case is answered or dropped
(never a 500: that would be our own failure), it is still alive afterwards, and it still
answers OPTIONS and routes a SIPp call to a SIPp PBX.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import world_traversable_tempdir
from tests.e2e.protos import ARCHIVE, Case, cases, fill
from tests.e2e.router_api import Router
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, free_port, run_sipp, sipp_command

SOURCE = "127.0.0.2"
BATCH = 250
QUIET = 0.1
"""A batch waits for its answers until none has come for this long (late ones still count)."""
PATIENCE = 1.0
"""... and never longer than this."""
UDP_MAX = 65_507
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*protos-(\d+)@", re.I | re.M)
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


@pytest.fixture(scope="module")
def suite() -> list[Case]:
    if not ARCHIVE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PROTOS c07-sip test data missing at {ARCHIVE}")
        pytest.skip(f"PROTOS c07-sip test data not at {ARCHIVE}")
    return cases()


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    workdir = world_traversable_tempdir("callrouter-protos-")
    server = ServeProcess(
        workdir / "data",
        "--sip-rate-per-second",
        "1000000",
        "--sip-rate-burst",
        "1000000",
        "--sip-carrier-flood-requests",
        "0",
    )
    try:
        server.wait_ready()
        yield Router(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def send_over_tcp(data: bytes, port: int) -> None:
    """Cases too big for a datagram go over TCP (where a request over max_message_bytes gets
    513 and the connection is closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as stream:
        stream.settimeout(5)
        with contextlib.suppress(OSError):  # closed on us mid-send: refused, which is the point
            stream.sendall(data)


def test_every_protos_case_is_answered_or_dropped_and_calls_still_route(
    suite: list[Case], router: Router, tmp_path: Path
) -> None:
    statuses: dict[int, list[int]] = {}
    started = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # answers wait while we send
        sock.bind((SOURCE, 0))
        port = sock.getsockname()[1]
        target = ("127.0.0.1", router.port)

        def collect(waiting: set[int], patience: float) -> None:
            deadline = time.monotonic() + patience
            while waiting and time.monotonic() < deadline:
                if not select.select([sock], [], [], QUIET)[0]:
                    break
                data = sock.recv(65535)
                status = _STATUS.match(data)
                call = _CALL_ID.search(data)
                if status is None or call is None:
                    continue
                number = int(call.group(1))
                statuses.setdefault(number, []).append(int(status.group(1)))
                waiting.discard(number)

        for first in range(0, len(suite), BATCH):
            batch = suite[first : first + BATCH]
            for case in batch:
                values = {
                    "to": f"+441519990000@127.0.0.1:{router.port}",
                    "source": SOURCE,
                    "port": port,
                    "call_id": f"protos-{case.number}",
                    "branch": f"c{case.number}",
                }
                invite = fill(case.invite, **values)
                if len(invite) > UDP_MAX:
                    send_over_tcp(invite, router.port)
                    continue
                sock.sendto(invite, target)
                if case.teardown is not None:
                    sock.sendto(fill(case.teardown, **values), target)
            collect({case.number for case in batch}, PATIENCE)
        collect({case.number for case in suite} - statuses.keys(), 2.0)
        seconds = time.perf_counter() - started
    answered = len(statuses)
    codes = sorted({code for seen in statuses.values() for code in seen})
    print(
        f"\nPROTOS c07-sip: {len(suite)} cases in {seconds:.1f} s; {answered} answered, "
        f"{len(suite) - answered} with no answer seen (dropped, or a Call-ID the case "
        f"mangled); status codes seen {codes}"
    )
    assert len(suite) == 4527
    # 501 (a mangled method), 505 (version) and 513 are the right answers to some cases; 500
    # would be our own failure.
    failures = {n: seen for n, seen in statuses.items() if 500 in seen}
    assert failures == {}, f"server errors for cases {sorted(failures)[:20]}"
    assert router.server.process.poll() is None, router.server.output[-3000:]
    assert "Traceback" not in router.server.output, router.server.output[-5000:]

    options = run_sipp(SCENARIOS / "options.xml", router.port, tmp_path)
    assert options.returncode == 0, options.stdout[-2000:] + options.stderr[-2000:]
    desk_dir = tmp_path / "pbx"
    desk_dir.mkdir()
    desk_port = free_port()
    command = sipp_command(SCENARIOS / "pbx_answer.xml", 0, desk_dir, calls=1)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(desk_port)
    desk = subprocess.Popen(command, cwd=desk_dir, stdout=subprocess.PIPE, text=True)
    try:
        e164 = router.number(f"sip:desk@127.0.0.1:{desk_port}")
        call = run_sipp("uac", router.port, tmp_path, service=e164)
        assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-2000:]
        router.server.wait_for(rf"call: \S+ to \{e164} ended answered", 30)
    finally:
        if desk.poll() is None:
            desk.kill()
        desk.communicate()
