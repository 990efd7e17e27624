"""Recorded calls through ``callrouter serve``: two pjsua2 phones, each playing its own tone.

The router anchors the call's RTP on its media worker, which records both parties into a
vault-encrypted FLAC file. The test downloads it over the API and checks by FFT that the
caller's tone is on the left and the callee's on the right for the whole answered time, that
nothing plaintext is on disk, and that a deleted recording cannot be decrypted from a copy.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
import soundfile

from callrouter.vault import Vault, VaultError
from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, free_port, run_sipp, sipp_command
from tests.e2e.test_swap import Receiver

CALLER_HZ, CALLEE_HZ = 440, 1000
PACKETS = 150  # each phone hears 3 s of the other before the caller hangs up


class Recorder:
    """A serve process with a client whose number records its calls."""

    def __init__(self, server: ServeProcess, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.client_id = self.api("POST", "/v1/clients", {"name": "Acme"})["id"]

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.server.http_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.server.operator_key}",
                "Content-Type": "application/json",
                **headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, _, data = self.request(method, path, body)
        assert 200 <= status < 300, (status, data[:500])
        return json.loads(data or b"null")

    def recorded_number(self, e164: str) -> int:
        """A recorded number whose destination is a desk phone; the desk's SIP port."""
        desk_port = free_port()
        self.api(
            "POST",
            "/v1/numbers",
            {
                "client_id": self.client_id,
                "e164": e164,
                "destination": f"sip:desk@127.0.0.1:{desk_port}",
                "record": True,
            },
        )
        return desk_port

    def vault(self) -> Vault:
        data = self.server.data_dir / "vault"
        return Vault.open(data / "keyring.json", data / "keys", create=False)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    workdir = world_traversable_tempdir("callrouter-recording-")
    server = ServeProcess(
        workdir / "data",
        "--recordings-dir",
        str(workdir / "recordings"),
        "--http-webhooks-to-private-addresses",
        "true",
    )
    try:
        server.wait_ready()
        yield Recorder(server, workdir)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def phones_command(recorder: Recorder, desk_port: int, e164: str, packets: int) -> list[str]:
    """two_phones.py: the caller at 440 Hz calls ``e164``, the desk answers at 1000 Hz."""
    return [
        sys.executable,
        str(Path(__file__).with_name("two_phones.py")),
        str(recorder.server.sip_port()),
        str(desk_port),
        e164,
        str(CALLER_HZ),
        str(CALLEE_HZ),
        str(packets),
    ]


def until_halfway(phones: subprocess.Popen[str]) -> list[str]:
    """The phones' output up to the line saying both have heard half the call."""
    assert phones.stdout is not None
    lines: list[str] = []
    while not any(line.startswith("audio: halfway=") for line in lines):
        line = phones.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    return lines


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 8000)[int(np.argmax(spectrum))])


def test_both_parties_are_recorded_on_their_own_channel(recorder: Recorder, tmp_path: Path) -> None:
    e164 = "+441515559001"
    desk_port = recorder.recorded_number(e164)
    result = subprocess.run(
        phones_command(recorder, desk_port, e164, PACKETS),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ready = recorder.server.wait_event("recording.ready", interrupted=False)
    recording_id, call_id = ready["recording_id"], ready["call_id"]

    call = recorder.api("GET", f"/v1/calls/{call_id}")
    assert (call["disposition"], call["record"], call["not_recorded_reason"]) == (
        "answered",
        True,
        None,
    )
    listed = recorder.api("GET", f"/v1/recordings?call_id={call_id}")["data"]
    assert [r["id"] for r in listed] == [recording_id]
    recording = listed[0]
    assert recording["format"] == "flac" and not recording["interrupted"]

    status, headers, flac = recorder.request("GET", f"/v1/recordings/{recording_id}/audio")
    assert status == 200 and headers["Content-Type"] == "audio/flac"
    assert len(flac) == recording["bytes"]
    audio, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    talk = call["talk_seconds"]
    assert abs(len(audio) / rate - talk) < 0.5, (len(audio) / rate, talk)

    # Every half second of the answered time (minus the first and last, where one party's
    # media may not have started or already stopped): the caller's tone left, the callee's right.
    window = rate // 2
    checked = 0
    for start in range(window, len(audio) - 2 * window, window):
        left, right = audio[start : start + window, 0], audio[start : start + window, 1]
        assert abs(dominant_hz(left) - CALLER_HZ) < 20, (start / rate, dominant_hz(left))
        assert abs(dominant_hz(right) - CALLEE_HZ) < 20, (start / rate, dominant_hz(right))
        checked += 1
    assert checked >= 3

    status, headers, part = recorder.request(
        "GET", f"/v1/recordings/{recording_id}/audio", Range="bytes=100-1099"
    )
    assert status == 206 and part == flac[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{len(flac)}"
    status, _, _ = recorder.request(
        "GET", f"/v1/recordings/{recording_id}/audio", Range=f"bytes={len(flac)}-"
    )
    assert status == 416
    peaks = recorder.api("GET", f"/v1/recordings/{recording_id}/peaks")
    assert len(peaks["channels"]) == 2

    # Nothing plaintext at rest: no FLAC or WAV header, no stretch of the audio, in any file.
    needles = [b"fLaC", b"RIFF", flac[len(flac) // 2 : len(flac) // 2 + 32]]
    stored = [p for p in (recorder.workdir / "recordings").rglob("*") if p.is_file()]
    stored += [p for p in (recorder.server.data_dir / "vault").rglob("*") if p.is_file()]
    assert stored
    for path in stored:
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), path

    (file,) = (recorder.workdir / "recordings").glob(f"{recording_id}.*")
    copy = tmp_path / "copy-before-delete"
    shutil.copy(file, copy)
    status, _, _ = recorder.request("DELETE", f"/v1/recordings/{recording_id}")
    assert status == 204
    assert not file.exists()
    assert recorder.request("GET", f"/v1/recordings/{recording_id}")[0] == 404
    with pytest.raises(VaultError, match="no data key"):
        recorder.vault().reader(UUID(recording_id), copy)


def test_a_suppressed_callers_call_is_connected_but_nothing_of_them_is_kept(
    recorder: Recorder, tmp_path: Path
) -> None:
    """After an objection, the caller's call is routed and answered, but it is not recorded,
    not attributed, and their number is in no call record, webhook payload or log line."""
    caller = "+447700900123"  # what the carrier scenarios send in From
    # A client of its own: the objection is to this client's processing, not everyone's.
    client_id = recorder.api("POST", "/v1/clients", {"name": "Objected to"})["id"]
    receiver = Receiver()
    try:
        hook = recorder.api(
            "POST",
            "/v1/webhooks",
            {
                "client_id": client_id,
                "url": receiver.url,
                "events": ["call.started", "call.answered", "call.completed"],
            },
        )
        objection = recorder.api(
            "POST",
            "/v1/privacy/requests",
            {
                "client_id": client_id,
                "kind": "objection",
                "subject": {"phone": caller},
            },
        )
        assert objection["status"] == "done"
        pbx_port = free_port()
        e164 = "+441515559002"
        recorder.api(
            "POST",
            "/v1/numbers",
            {
                "client_id": client_id,
                "e164": e164,
                "destination": f"sip:desk@127.0.0.1:{pbx_port}",
                "record": True,
            },
        )
        command = sipp_command(SCENARIOS / "pbx_hangs_up.xml", 0, tmp_path)
        command[1] = "-bind_local"
        command = [c for c in command if c != "-timeout_error"]
        command[command.index("-p") + 1] = str(pbx_port)
        pbx = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        try:
            result = run_sipp(
                SCENARIOS / "carrier_callee_hangs_up.xml",
                recorder.server.sip_port(),
                tmp_path,
                service=e164,
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            assert pbx.wait(timeout=60) == 0
        finally:
            if pbx.poll() is None:
                pbx.kill()
            pbx.communicate()
        ended = recorder.server.wait_event(
            "call.ended", tracking_number=e164, disposition="answered"
        )
        call = recorder.api("GET", f"/v1/calls/{ended['call_id']}")
        events = receiver.events(3, hook["secret"])
    finally:
        receiver.close()
    assert (call["caller_number"], call["session_id"], call["attribution"]) == (None, None, {})
    assert "objected" in call["not_recorded_reason"]
    assert recorder.api("GET", f"/v1/recordings?call_id={call['id']}")["data"] == []
    assert set(events) == {"call.started", "call.answered", "call.completed"}
    digits = caller.removeprefix("+44")
    for event in events.values():
        assert digits not in json.dumps(event), event
    assert digits not in recorder.server.output


def test_a_paused_recording_holds_silence_from_the_pause_on(
    recorder: Recorder, tmp_path: Path
) -> None:
    """PCI: the API pauses a live call's recording halfway; from then on both channels are
    silent in the file, while the parties still hear each other."""
    e164 = "+441515559003"
    desk_port = recorder.recorded_number(e164)
    phones = subprocess.Popen(
        phones_command(recorder, desk_port, e164, PACKETS),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = until_halfway(phones)
        assert lines[-1].strip() == "audio: halfway=True", "".join(lines)
        (live,) = recorder.api("GET", f"/v1/calls?state=active&number=%2B{e164[1:]}")["data"]
        paused = recorder.api("POST", f"/v1/calls/{live['id']}/recording", {"paused": True})
        assert paused == {"call_id": live["id"], "paused": True}
        output, _ = phones.communicate(timeout=120)
        assert phones.returncode == 0, "".join(lines) + output
    finally:
        if phones.poll() is None:
            phones.kill()
            phones.communicate()
    recorder.server.wait_event("recording.ready", call_id=live["id"])
    (recording,) = recorder.api("GET", f"/v1/recordings?call_id={live['id']}")["data"]
    _, _, flac = recorder.request("GET", f"/v1/recordings/{recording['id']}/audio")
    audio, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
    early = audio[rate // 2 : rate]
    assert abs(dominant_hz(early[:, 0]) - CALLER_HZ) < 20
    assert abs(dominant_hz(early[:, 1]) - CALLEE_HZ) < 20
    # Sound up to the pause (about halfway), then only exact silence on both channels.
    last_sound = int(np.nonzero(np.any(audio != 0, axis=1))[0][-1])
    assert rate < last_sound < len(audio) - rate // 2, (last_sound / rate, len(audio) / rate)
    after = recorder.request("POST", f"/v1/calls/{live['id']}/recording", {"paused": False})
    assert after[0] == 409  # the call is over


def test_a_media_worker_killed_mid_call_ends_the_call_and_keeps_what_was_recorded(
    recorder: Recorder, tmp_path: Path
) -> None:
    e164 = "+441515559004"
    desk_port = recorder.recorded_number(e164)
    pid = int(recorder.server.wait_for(r"media: worker 0 pid (\d+)").group(1))
    phones = subprocess.Popen(
        phones_command(recorder, desk_port, e164, 4 * PACKETS),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        until_halfway(phones)
        os.kill(pid, signal.SIGKILL)
        ended = recorder.server.wait_event(
            "call.ended", tracking_number=e164, disposition="answered", hangup_by="system"
        )
    finally:
        # The router has hung up; the phones have nothing more to prove.
        phones.kill()
        phones.communicate()
    call = recorder.api("GET", f"/v1/calls/{ended['call_id']}")
    assert call["hangup_reason"] == "media worker lost"
    recorder.server.wait_event("recording.ready", call_id=call["id"], interrupted=True)
    (recording,) = recorder.api("GET", f"/v1/recordings?call_id={call['id']}")["data"]
    assert recording["interrupted"] is True
    status, _, data = recorder.request("GET", f"/v1/recordings/{recording['id']}/audio")
    assert status == 200
    audio, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    # What was flushed before the kill (all but the last second or two) decrypts and holds the
    # caller left and the callee right.
    assert len(audio) >= rate
    start = rate // 4
    assert abs(dominant_hz(audio[start : start + rate // 2, 0]) - CALLER_HZ) < 20
    assert abs(dominant_hz(audio[start : start + rate // 2, 1]) - CALLEE_HZ) < 20
