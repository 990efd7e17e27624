"""Several media workers under ``callrouter serve``: calls spread, one worker killed alone,
readiness and metrics for each.

Real processes throughout: ``serve`` with ``--media-workers 2``, pjsua2 phone pairs
(tests/e2e/two_phones.py) on recorded numbers, and SIGKILL for one worker. Which worker carries
a call is read from the kernel (the UDP sockets each worker process holds), not from the router.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess
from tests.e2e.test_recording import (
    CALLEE_HZ,
    CALLER_HZ,
    PACKETS,
    Recorder,
    dominant_hz,
    phones_command,
)


def udp_ports(pid: int) -> set[int]:
    """The local ports of the UDP sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(m.group(1))
    ports = set()
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Workers:
    """The media workers of a serve process, as its log names them."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        found = [
            server.wait_for(rf"media: worker {number} pid (\d+), RTP on \S+:(\d+)-(\d+)")
            for number in (0, 1)
        ]
        self.pids = [int(m.group(1)) for m in found]
        self.slices = [range(int(m.group(2)), int(m.group(3)) + 1) for m in found]

    def calls_on(self, number: int) -> int:
        """Recorded calls worker ``number`` relays now: four sockets (two legs, RTP and RTCP)
        each, every one in the worker's own slice of the range."""
        ports = udp_ports(self.pids[number])
        assert all(port in self.slices[number] for port in ports), (ports, self.slices[number])
        return len(ports) // 4


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    workdir = world_traversable_tempdir("callrouter-workers-")
    server = ServeProcess(
        workdir / "data",
        "--recordings-dir",
        str(workdir / "recordings"),
        "--media-workers",
        "2",
        # The hung-worker test waits this out on every scrape and readiness check (default 2 s).
        "--metrics-check-timeout",
        "1",
    )
    try:
        server.wait_ready()
        yield Recorder(server, workdir)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start_call(
    recorder: Recorder,
    e164: str,
    packets: int,
    cwd: Path,
    up: Callable[[], bool],
    *,
    hold: bool = False,
) -> subprocess.Popen[str]:
    """A recorded call between two phones, returned once ``up`` says its media is anchored.

    :param hold: the call goes on past ``packets`` until ``finish`` (two_phones.py ``hold``).
    """
    desk_port = recorder.recorded_number(e164)
    phones = subprocess.Popen(
        [*phones_command(recorder, desk_port, e164, packets), *(["hold"] if hold else [])],
        cwd=cwd,
        stdin=subprocess.PIPE,  # closed by finish(): a held call ends then
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not up():
        assert phones.poll() is None, phones.communicate()[0]
        assert time.monotonic() < deadline, "the call's media was never anchored"
        time.sleep(0.05)
    return phones


def finish(phones: subprocess.Popen[str]) -> int:
    """Ends a held call, waits for the phones; the RTP packets the caller received."""
    output, _ = phones.communicate(timeout=180)
    assert phones.returncode == 0, output
    received = re.search(r"audio: caller received (\d+) RTP packets", output)
    assert received is not None, output
    return int(received.group(1))


def test_calls_spread_over_the_workers_and_a_killed_worker_takes_only_its_own_calls(
    recorder: Recorder, tmp_path: Path
) -> None:
    workers = Workers(recorder.server)
    assert workers.slices[0].stop <= workers.slices[1].start  # two slices, one after the other
    started = []
    try:
        # First call on worker 0 (a tie goes to the lower number), the second on worker 1.
        doomed = start_call(
            recorder, "+441515558001", 6 * PACKETS, tmp_path, lambda: workers.calls_on(0) == 1
        )
        started.append(doomed)
        # Held until worker 0 is back and has carried a call of its own.
        going_on = start_call(
            recorder,
            "+441515558002",
            PACKETS,
            tmp_path,
            lambda: workers.calls_on(1) == 1,
            hold=True,
        )
        started.append(going_on)
        assert (workers.calls_on(0), workers.calls_on(1)) == (1, 1)

        os.kill(workers.pids[0], signal.SIGKILL)
        ended = recorder.server.wait_event(
            "call.ended", tracking_number="+441515558001", hangup_by="system"
        )
        lost = recorder.api("GET", f"/v1/calls/{ended['call_id']}")
        assert lost["hangup_reason"] == "media worker lost"
        # The restarted worker 0 finalises what the killed one was recording ...
        new_pid = int(recorder.server.wait_for(r"media worker 0 restarted: pid (\d+)").group(1))
        assert new_pid != workers.pids[0]
        recorder.server.wait_event("recording.ready", call_id=lost["id"], interrupted=True)
        # ... and takes the next call (worker 1 still carries one), while worker 1's call goes on.
        workers.pids[0] = new_pid
        fresh = start_call(
            recorder, "+441515558003", PACKETS, tmp_path, lambda: workers.calls_on(0) == 1
        )
        started.append(fresh)
        assert workers.calls_on(1) == 1
        heard = {"+441515558003": finish(fresh), "+441515558002": finish(going_on)}
    finally:
        for phones in started:
            if phones.poll() is None:
                phones.kill()
                phones.communicate()

    for e164, packets in heard.items():
        ended = recorder.server.wait_event("call.ended", tracking_number=e164)
        call = recorder.api("GET", f"/v1/calls/{ended['call_id']}")
        assert call["hangup_reason"] != "media worker lost"
        recorder.server.wait_event("recording.ready", call_id=call["id"], interrupted=False)
        (recording,) = recorder.api("GET", f"/v1/recordings?call_id={call['id']}")["data"]
        status, _, data = recorder.request("GET", f"/v1/recordings/{recording['id']}/audio")
        assert status == 200
        audio, rate = soundfile.read(io.BytesIO(data), dtype="int16")
        # The whole call, caller left and callee right, from its first second to its last.
        assert len(audio) >= packets * 160 * 0.9, (e164, len(audio) / rate)
        for where in (rate // 4, len(audio) - rate):
            window = audio[where : where + rate // 2]
            assert abs(dominant_hz(window[:, 0]) - CALLER_HZ) < 20, (e164, where)
            assert abs(dominant_hz(window[:, 1]) - CALLEE_HZ) < 20, (e164, where)


def ready(recorder: Recorder) -> tuple[int, dict[str, Any]]:
    status, _, body = recorder.request("GET", "/v1/ready")
    return status, json.loads(body)


def workers_up(recorder: Recorder) -> dict[str, float]:
    """``callrouter_media_worker_up`` by worker, from a real scrape."""
    metrics_url = recorder.server.wait_for(r"metrics: (\S+)").group(1)
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "callrouter_media_worker_up"
    }


def test_readiness_and_metrics_cover_every_worker(recorder: Recorder) -> None:
    pid = Workers(recorder.server).pids[1]  # never killed: its pid from the start
    assert workers_up(recorder) == {"0": 1, "1": 1}
    assert ready(recorder)[1]["components"]["media"] == "up"
    os.kill(pid, signal.SIGSTOP)  # worker 1 hung, not dead: only a ping finds it out
    try:
        status, body = ready(recorder)
        assert (status, body["components"]["media"]) == (503, "down")
        assert workers_up(recorder) == {"0": 1, "1": 0}
    finally:
        os.kill(pid, signal.SIGCONT)
    assert workers_up(recorder) == {"0": 1, "1": 1}
    assert ready(recorder)[0] == 200
