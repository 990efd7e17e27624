"""Media faults through ``callrouter serve``: a killed server, a port someone else holds.

Real processes, real pjsua2 phones (tests/e2e/two_phones.py) and real signals: the test kills
``serve`` with SIGKILL and checks by pid that its media worker went with it; it holds an RTP
port with a socket of its own and checks the call is still connected, unrecorded, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from callrouter.store.database import ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess, seed_cluster
from tests.e2e.sipp import free_port
from tests.e2e.test_faults import descendants, query_dsn
from tests.e2e.test_swap import Receiver
from tests.media.test_worker_lifeline import alive, wait_gone

CALLER_HZ, CALLEE_HZ = 440, 1000
PACKETS = 150  # each phone hears 3 s of the other before the caller hangs up
MIN_FREE_BYTES = 250_000


class Api:
    """The HTTP API of a serve process, with the operator key of the first start."""

    def __init__(self, server: ServeProcess, key: str) -> None:
        self.url = server.http_url
        self.key = key

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = self.request(method, path, body)
        assert 200 <= status < 300, (status, data[:500])
        return json.loads(data or b"null")

    def recorded_number(self, client_id: str, e164: str) -> int:
        """A recorded number ringing a desk phone; the desk's SIP port."""
        desk_port = free_port()
        self.json(
            "POST",
            "/v1/numbers",
            {
                "client_id": client_id,
                "e164": e164,
                "destination": f"sip:desk@127.0.0.1:{desk_port}",
                "record": True,
            },
        )
        return desk_port


def rtp_range() -> int:
    """An even port P with P..P+3 free on loopback: room for one call's two RTP/RTCP pairs."""
    for _ in range(50):
        first = free_port() & ~1
        with ExitStack() as stack:
            try:
                for port in range(first, first + 4):
                    held = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    held.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise AssertionError("no free RTP range")


def serve(workdir: Path, dsn: str, rtp: int, *args: str) -> ServeProcess:
    return ServeProcess(
        workdir / "data",
        "--recordings-dir",
        str(workdir / "recordings"),
        "--database-url",
        dsn,
        "--media-ports",
        f"{rtp}-{rtp + 3}",
        *args,
    ).wait_ready()


def phones(server: ServeProcess, desk_port: int, e164: str, packets: int) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).with_name("two_phones.py")),
        str(server.sip_port()),
        str(desk_port),
        e164,
        str(CALLER_HZ),
        str(CALLEE_HZ),
        str(packets),
    ]


def call(server: ServeProcess, desk_port: int, e164: str, cwd: Path) -> None:
    """A whole call between the two phones; both must hear each other (no dead air)."""
    result = subprocess.run(
        phones(server, desk_port, e164, PACKETS),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 8000)[int(np.argmax(spectrum))])


@contextmanager
def workspace() -> Iterator[Path]:
    workdir = world_traversable_tempdir("callrouter-media-faults-")
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_kill_9_of_serve_takes_its_media_worker_and_the_next_serve_records(
    database_dsn: str, tmp_path: Path
) -> None:
    rtp = rtp_range()
    with workspace() as workdir:
        first = serve(workdir, dsn=database_dsn, rtp=rtp)
        try:
            key = first.operator_key
            assert key is not None
            api = Api(first, key)
            client_id = api.json("POST", "/v1/clients", {"name": "Acme"})["id"]
            e164 = "+441515559101"
            desk_port = api.recorded_number(client_id, e164)
            worker_pid = int(first.wait_for(r"media: worker 0 pid (\d+)").group(1))
            # A recorded call is up, its RTP on the worker's ports, when serve is killed.
            ringing = subprocess.Popen(
                phones(first, desk_port, e164, 4 * PACKETS),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                assert ringing.stdout is not None
                for line in ringing.stdout:
                    if line.startswith("audio: halfway="):
                        assert "True" in line
                        break
                first.process.kill()
                killed = time.monotonic()
                first.process.wait()
                gone = wait_gone(worker_pid)
                print(f"media worker gone {time.monotonic() - killed:.2f} s after serve was killed")
                assert gone, f"media worker {worker_pid} outlived the killed server"
            finally:
                ringing.kill()
                ringing.communicate()
        finally:
            first.kill()

        second = serve(workdir, dsn=database_dsn, rtp=rtp)
        try:
            new_pid = int(second.wait_for(r"media: worker 0 pid (\d+)").group(1))
            assert new_pid != worker_pid and alive(new_pid)
            # The recording the killed server was making is kept, finalised as interrupted.
            second.wait_for(r"media: finalised 1 recording\(s\) interrupted by the last run")
            api = Api(second, key)
            call(second, desk_port, e164, tmp_path)
            ready = second.wait_for(r"recording: (\S+) of call (\S+) ready \([\d.]+ s\)$")
            recording_id, call_id = ready.group(1), ready.group(2)
            record = api.json("GET", f"/v1/calls/{call_id}")
            assert (record["record"], record["not_recorded_reason"]) == (True, None)
            status, flac = api.request("GET", f"/v1/recordings/{recording_id}/audio")
            assert status == 200
            audio, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
            middle = len(audio) // 2
            assert abs(dominant_hz(audio[middle : middle + rate // 2, 0]) - CALLER_HZ) < 20
            assert abs(dominant_hz(audio[middle : middle + rate // 2, 1]) - CALLEE_HZ) < 20
        finally:
            second.stop()


def test_a_recording_finished_while_the_database_is_away_survives_a_kill_of_serve(
    tmp_path: Path,
) -> None:
    """The database stopped, a recorded call made and ended, serve and its media worker
    SIGKILLed before the database is back: at the next start the recording has its row, plays
    back, and its recording.ready is delivered, signed, once."""
    rtp = rtp_range()
    receiver = Receiver()
    private = ("--http-webhooks-to-private-addresses", "true")
    with workspace() as workdir:
        seed_cluster(workdir)  # a migrated cluster, copied: no initdb
        database = EmbeddedPostgres(workdir / "postgres")
        database.start()
        try:
            asyncio.run(ensure_database(database.admin_dsn, DATABASE))
            first = serve(workdir, database.dsn, rtp, *private)
            try:
                key = first.operator_key
                assert key is not None
                api = Api(first, key)
                client_id = api.json("POST", "/v1/clients", {"name": "Acme"})["id"]
                e164 = "+441515559103"
                desk_port = api.recorded_number(client_id, e164)
                hook = api.json(
                    "POST",
                    "/v1/webhooks",
                    {"client_id": client_id, "url": receiver.url, "events": ["recording.ready"]},
                )
                # A recorded call while the database is up: the number is in memory from then
                # on, and the receiver hears its recording.
                call(first, desk_port, e164, tmp_path)
                (before,) = receiver.events(1, hook["secret"]).values()
                delivered = (
                    "SELECT attempts FROM webhook_deliveries "
                    f"WHERE webhook_id = '{hook['id']}' AND delivered_at IS NOT NULL"
                )
                assert wait_until(lambda: len(query_dsn(database.dsn, delivered)) == 1)
                database.stop()  # away, and (not embedded) nobody brings it back
                assert wait_until(lambda: api.request("GET", "/v1/ready")[0] == 503)

                call(first, desk_port, e164, tmp_path)
                spooled = workdir / "data" / "spool"

                def on_disk() -> bool:
                    text = "".join(f.read_text() for f in spooled.glob("*.jsonl"))
                    return text.count('"type":"RecordingFinished"') == 2

                assert wait_until(on_disk), "the second recording's event is not on disk"
                assert receiver.received.empty()
            finally:
                victims = [first.process.pid, *descendants(first.process.pid)]
                for pid in victims:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                first.kill()

            database.start()
            second = serve(workdir, database.dsn, rtp, *private)
            try:
                second.wait_for(r"calls: wrote \d+ call event\(s\) spooled by the last run")
                (after,) = receiver.events(1, hook["secret"]).values()  # signature checked
                data = after["data"]
                assert data["call_id"] != before["data"]["call_id"]
                assert (data["format"], data["interrupted"], data["truncated"]) == (
                    "flac",
                    False,
                    False,
                )
                api = Api(second, key)
                record = api.json("GET", f"/v1/calls/{data['call_id']}")
                assert (record["disposition"], record["record"]) == ("answered", True)
                (recording,) = api.json("GET", f"/v1/recordings?call_id={record['id']}")["data"]
                assert recording["id"] == data["id"]
                status, flac = api.request("GET", f"/v1/recordings/{recording['id']}/audio")
                assert status == 200 and len(flac) == recording["bytes"]
                audio, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
                middle = len(audio) // 2
                assert abs(dominant_hz(audio[middle : middle + rate // 2, 0]) - CALLER_HZ) < 20
                assert abs(dominant_hz(audio[middle : middle + rate // 2, 1]) - CALLEE_HZ) < 20
                # Once: two deliveries in all, each sent once, and nothing more arrives.
                assert wait_until(lambda: len(query_dsn(database.dsn, delivered)) == 2)
                rows = query_dsn(
                    database.dsn,
                    f"SELECT attempts FROM webhook_deliveries WHERE webhook_id = '{hook['id']}'",
                )
                assert [r["attempts"] for r in rows] == [1, 1]
                assert receiver.received.empty()
            finally:
                second.stop()
        finally:
            receiver.close()
            database.stop()


def test_a_call_whose_rtp_port_is_held_elsewhere_is_connected_unrecorded_saying_why(
    tmp_path: Path,
) -> None:
    rtp = rtp_range()
    with workspace() as workdir, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        server = ServeProcess(
            workdir / "data",
            "--recordings-dir",
            str(workdir / "recordings"),
            "--media-ports",
            f"{rtp}-{rtp + 3}",
        ).wait_ready()
        try:
            key = server.operator_key
            assert key is not None
            api = Api(server, key)
            client_id = api.json("POST", "/v1/clients", {"name": "Acme"})["id"]
            e164 = "+441515559102"
            desk_port = api.recorded_number(client_id, e164)
            # Another process holds the first RTP port of the only pair the server can use.
            squatter.bind(("127.0.0.1", rtp))
            started = time.monotonic()
            call(server, desk_port, e164, tmp_path)  # both phones hear each other
            print(f"call with a held port: {time.monotonic() - started:.1f} s")
            ended = server.wait_for(rf"call: (\S+) to \{e164} ended answered")
            record = api.json("GET", f"/v1/calls/{ended.group(1)}")
            reason = record["not_recorded_reason"]
            assert f"cannot bind RTP ports ({rtp}, {rtp + 2})" in reason, reason
            assert "Address already in use" in reason, reason
            listed = api.json("GET", f"/v1/recordings?call_id={record['id']}")["data"]
            assert listed == []
            # The worker gave back what it could bind: with the port free, calls record again.
            squatter.close()
            call(server, desk_port, e164, tmp_path)
            again = server.wait_for(r"recording: \S+ of call (\S+) ready")
            assert again.group(1) != record["id"]
        finally:
            server.stop()


@contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (needs root: mount(2))."""
    with workspace() as root:
        mount = root / "recordings"
        mount.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
            check=True,
        )
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def health(api: Api) -> dict[str, Any]:
    status, data = api.request("GET", "/v1/health")
    assert status == 200, data
    space: dict[str, Any] = json.loads(data)["recording_space"]
    return space


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def fill(disk: Path, leave: int) -> None:
    """Take all but ``leave`` bytes of the disk's free space with a file of our own."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with (disk / "filler").open("wb") as filler:
        filler.write(b"\0" * max(0, free - leave))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a 2 MB tmpfs needs root (CI runs as root)")
def test_a_disk_that_fills_mid_call_keeps_each_recording_so_far_flagged_truncated(
    tmp_path: Path,
) -> None:
    numbers = ["+441515559111", "+441515559112", "+441515559113"]
    with small_disk("2m") as disk, workspace() as workdir:
        server = ServeProcess(
            workdir / "data",
            "--recordings-dir",
            str(disk),
            "--media-min-free-bytes",
            str(MIN_FREE_BYTES),
        )
        try:
            server.wait_ready()
            key = server.operator_key
            assert key is not None
            api = Api(server, key)
            client_id = api.json("POST", "/v1/clients", {"name": "Acme"})["id"]
            desks = [api.recorded_number(client_id, e164) for e164 in numbers]
            # About 6 s of three recorded calls (32 kB/s each as raw) fit in what is left,
            # which is above media.min_free_bytes: they start recording.
            fill(disk, leave=600_000)
            assert wait_until(lambda: health(api)["status"] == "ok")
            started = time.monotonic()
            calls = [
                subprocess.Popen(
                    phones(server, desk, e164, 4 * PACKETS),
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for desk, e164 in zip(desks, numbers, strict=True)
            ]
            for phone in calls:
                out, _ = phone.communicate(timeout=120)
                assert phone.returncode == 0, out[-3000:]
            print(f"three calls on a full disk: {time.monotonic() - started:.1f} s")
            ready = server.wait_for_all(
                r"recording: \S+ of call (\S+) ready \([\d.]+ s, truncated: ", 3
            )
            for call_id in ready:
                record = api.json("GET", f"/v1/calls/{call_id}")
                assert record["disposition"] == "answered"
                reason = record["recording_truncated_reason"]
                assert reason == "the recordings disk is full (No space left on device)"
                (recording,) = api.json("GET", f"/v1/recordings?call_id={call_id}")["data"]
                assert (recording["truncated"], recording["truncated_reason"]) == (True, reason)
                status, data = api.request("GET", f"/v1/recordings/{recording['id']}/audio")
                assert status == 200 and len(data) == recording["bytes"]
                audio, rate = soundfile.read(io.BytesIO(data), dtype="int16")
                kept = len(audio) / rate
                assert abs(kept - recording["duration_seconds"]) < 0.01
                # Cut short: at least a second kept, and well before the call's end.
                assert 1.0 <= kept < record["talk_seconds"] - 2.0, (kept, record["talk_seconds"])
                print(
                    f"kept {kept:.1f} s of {record['talk_seconds']:.1f} s talk "
                    f"as {recording['format']} ({recording['bytes']} bytes)"
                )
                # Both parties, each on their own channel, up to where the disk filled.
                window = rate // 2
                for start in range(rate // 4, len(audio) - window, window):
                    left = audio[start : start + window, 0]
                    right = audio[start : start + window, 1]
                    assert abs(dominant_hz(left) - CALLER_HZ) < 20, (start / rate, kept)
                    assert abs(dominant_hz(right) - CALLEE_HZ) < 20, (start / rate, kept)
                # Finalised: nothing of it is left unfinished on the disk.
                assert not list(disk.glob(f"{recording['id']}.*part"))
                assert not list(disk.glob(f"{recording['id']}.raw"))

            # The disk is below media.min_free_bytes now: a new call is connected (the phones
            # hear each other) but not recorded, and its record says why.
            space = health(api)
            assert space["status"] == "low" and space["free_bytes"] < MIN_FREE_BYTES
            call(server, desks[0], numbers[0], tmp_path)
            ended = server.wait_for_all(rf"call: (\S+) to \{numbers[0]} ended answered", 2)
            refused = api.json("GET", f"/v1/calls/{ended[1]}")
            assert refused["not_recorded_reason"].startswith("not enough space for recordings: ")
            assert api.json("GET", f"/v1/recordings?call_id={refused['id']}")["data"] == []
        finally:
            server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_serve_starts_when_its_data_disk_is_too_full_for_the_recordings_sweep_mark(
    database_dsn: str,
) -> None:
    """The sweep's mark is a saving, not a need: a start that cannot write it says so and
    serves; the previous mark stays, whole."""
    rtp = rtp_range()
    with workspace() as workdir:
        data = workdir / "data"
        data.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(data)], check=True
        )
        try:
            first = serve(workdir, dsn=database_dsn, rtp=rtp)
            try:
                assert "recordings: checked all 0 final file(s) (no sweep mark yet)" in (
                    first.messages
                )
            finally:
                first.stop()
            mark = data / "recordings-swept.json"
            previous = mark.read_bytes()
            assert json.loads(previous)["kept"] == []
            fill(data, 0)
            second = serve(workdir, dsn=database_dsn, rtp=rtp)
            try:
                messages = second.messages
                assert any(
                    m.startswith("recordings: cannot write the sweep mark")
                    and "No space left on device" in m
                    for m in messages
                ), messages
                assert any(
                    m.startswith("recordings: checked 0 final file(s) changed since")
                    and m.endswith("or kept, passed over 0 older (sweep mark)")
                    for m in messages
                ), messages
            finally:
                second.stop()
            assert mark.read_bytes() == previous
        finally:
            subprocess.run(["umount", "-l", str(data)], check=False)
