"""Recorded calls through ``callrouter serve``: two pjsua2 phones, each playing its own tone.

The router anchors the call's RTP on its media worker, which records both parties into a
vault-encrypted FLAC file. The test downloads it over the API and checks by FFT that the
caller's tone is on the left and the callee's on the right for the whole answered time, that
nothing plaintext is on disk, and that a deleted recording cannot be decrypted from a copy.
"""

from __future__ import annotations

import io
import json
import shutil
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


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 8000)[int(np.argmax(spectrum))])


def test_both_parties_are_recorded_on_their_own_channel(recorder: Recorder, tmp_path: Path) -> None:
    desk_port = free_port()
    e164 = "+441515559001"
    recorder.api(
        "POST",
        "/v1/numbers",
        {
            "client_id": recorder.client_id,
            "e164": e164,
            "destination": f"sip:desk@127.0.0.1:{desk_port}",
            "record": True,
        },
    )
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("two_phones.py")),
            str(recorder.server.sip_port()),
            str(desk_port),
            e164,
            str(CALLER_HZ),
            str(CALLEE_HZ),
            str(PACKETS),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ready = recorder.server.wait_for(r"recording: (\S+) of call (\S+) ready \(([\d.]+) s\)")
    recording_id, call_id = ready.group(1), ready.group(2)

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
    receiver = Receiver()
    try:
        hook = recorder.api(
            "POST",
            "/v1/webhooks",
            {
                "client_id": recorder.client_id,
                "url": receiver.url,
                "events": ["call.started", "call.answered", "call.completed"],
            },
        )
        objection = recorder.api(
            "POST",
            "/v1/privacy/requests",
            {
                "client_id": recorder.client_id,
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
                "client_id": recorder.client_id,
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
        line = recorder.server.wait_for(rf"call: (\S+) to \{e164} ended answered")
        call = recorder.api("GET", f"/v1/calls/{line.group(1)}")
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
