"""Recording in the media worker: a real worker process, real UDP on loopback, the real vault.

Two UDP sockets play the parties: the caller sends a 440 Hz tone, the callee 1000 Hz, as PCMU
in 20 ms packets, paced in bursts of 100 ms (the recorder places audio by RTP timestamp; the
arrival of a stream's first packet only anchors it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import resource
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from numpy.typing import NDArray

from callrouter.media.control import MediaError, MediaWorkerProcess, RecordingSettings
from callrouter.media.encoding import decode
from callrouter.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from callrouter.media.prompt import packetize, tone
from callrouter.media.recording import orphaned_raw_directories, raw_directory
from callrouter.media.rtp import parse_rtp
from callrouter.vault import Vault
from tests.media import test_worker
from tests.media.test_worker import WAIT, Peer

peer = test_worker.peer  # the fixture making UDP parties
RATE = 8000
CALLER_HZ, CALLEE_HZ = 440.0, 1000.0
Events = asyncio.Queue[dict[str, Any]]
MakeWorker = Callable[..., Awaitable[MediaWorkerProcess]]


@pytest.fixture
def settings(tmp_path: Path) -> RecordingSettings:
    return RecordingSettings(
        tmp_path / "recordings", tmp_path / "secrets" / "keyring.json", tmp_path / "keys"
    )


@pytest.fixture
async def events() -> Events:
    return asyncio.Queue()


@pytest.fixture
def vault(settings: RecordingSettings) -> Vault:
    """The vault, made as the signalling process makes it before it starts the worker."""
    return Vault.open(settings.key_ring, settings.keys_dir)


@pytest.fixture
async def make_worker(
    tmp_path: Path, settings: RecordingSettings, events: Events, vault: Vault
) -> AsyncIterator[MakeWorker]:
    """Starts recording workers (one at a time on the same files), stopped after the test."""
    async with AsyncExitStack() as stack:

        async def make(
            media_timeout: float = 60.0, prompts: Path | None = None
        ) -> MediaWorkerProcess:
            process = MediaWorkerProcess(
                tmp_path / "media.sock",
                "127.0.0.1",
                "41100-41199",
                media_timeout=media_timeout,
                on_event=events.put_nowait,
                recording=settings,
                prompts=prompts,
            )
            await process.start()
            stack.push_async_callback(process.stop)
            return process

        yield make


@pytest.fixture
async def worker(make_worker: MakeWorker) -> MediaWorkerProcess:
    return await make_worker()


class Call:
    """Two parties on a relayed call: the caller sends a 440 Hz tone, the callee 1000 Hz."""

    def __init__(
        self, worker: MediaWorkerProcess, name: str, caller: Peer, callee: Peer, seconds: float
    ) -> None:
        self.worker = worker
        self.name = name
        self.caller = caller
        self.callee = callee
        self.recording = uuid.uuid4()
        self.audio = {"a": tone(CALLER_HZ, seconds), "b": tone(CALLEE_HZ, seconds)}
        self.packets = {
            "a": packetize(self.audio["a"], ssrc=0x1111, sequence=100, timestamp=5000),
            "b": packetize(self.audio["b"], ssrc=0x2222, sequence=65500, timestamp=2**32 - 800),
        }
        self.sent = 0
        self.ports: dict[str, list[Any]] = {}
        self.lost: dict[str, set[int]] = {"a": set(), "b": set()}
        """Packet indexes dropped on the way to the relay (loss in the media path)."""

    async def connect(self, ports: tuple[int, int] | None = None) -> None:
        extra = {"ports": list(ports)} if ports else {}
        self.ports = await self.worker.command("create", call=self.name, **extra)
        for leg, party in (("a", self.caller), ("b", self.callee)):
            await self.worker.command(
                "signal", call=self.name, leg=leg, rtp=list(party.address), rtcp=None, nat=False
            )

    async def record(self) -> None:
        await self.worker.command("record", call=self.name, recording=str(self.recording))

    async def talk(self, seconds: float) -> None:
        """Send the next ``seconds`` of both tones, 100 ms at a time (load pacing)."""
        end = min(self.sent + round(seconds / 0.02), len(self.packets["a"]))
        while self.sent < end:
            burst = range(self.sent, min(self.sent + 5, end))
            for index in burst:
                if index not in self.lost["a"]:
                    self.caller.send(self.packets["a"][index], self.ports["a"])
                if index not in self.lost["b"]:
                    self.callee.send(self.packets["b"][index], self.ports["b"])
            self.sent = burst.stop
            await asyncio.sleep(0.1)

    def expected(self, leg: str) -> NDArray[np.int16]:
        """What the recorder should hold for ``leg``: the tone through G.711 and back."""
        padded = np.concatenate([self.audio[leg], np.zeros(-len(self.audio[leg]) % 160)])
        return ulaw_decode(ulaw_encode(padded.astype(np.int16)))


@pytest.fixture
async def call(
    worker: MediaWorkerProcess, peer: Callable[..., Awaitable[Peer]]
) -> AsyncIterator[Call]:
    made = Call(worker, "c1", await peer(), await peer(), seconds=3.0)
    yield made


async def next_event(events: Events, kind: str) -> dict[str, Any]:
    while (event := await asyncio.wait_for(events.get(), WAIT))["event"] != kind:
        pass
    return event


def free_port_pairs(count: int) -> list[int]:
    """Even ports whose pair (port, port + 1) is free on 127.0.0.1 now."""
    found: list[int] = []
    for port in range(42000, 43000, 2):
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        found.append(port)
        if len(found) == count:
            return found
    raise AssertionError("no free port pairs")


def read(vault: Vault, recording: uuid.UUID, path: Path) -> bytes:
    with vault.reader(recording, path) as source:
        return source.read_all()


def dominant(samples: NDArray[np.int16]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    return float(np.argmax(spectrum) * RATE / len(samples))


def start_of(channel: NDArray[np.int16], expected: NDArray[np.int16]) -> int:
    """Where ``expected``'s first 20 ms sit in ``channel``."""
    head = expected[:160]
    for offset in range(len(channel) - len(head)):
        if np.array_equal(channel[offset : offset + len(head)], head):
            return offset
    raise AssertionError("the sent audio is not in the recording")


def assert_prefix(channel: NDArray[np.int16], expected: NDArray[np.int16]) -> None:
    """From where the audio starts, ``channel`` is ``expected`` (cut short, or followed by
    silence); a packet the recorder counted late (a loaded machine) may be silence instead."""
    got = channel[start_of(channel, expected) :]
    size = min(len(got), len(expected))
    same = got[:size] == expected[:size]
    assert np.all(same | (got[:size] == 0))
    assert same.mean() > 0.95
    assert not got[size:].any()  # silence after the audio ended, until the call did


def files_under(*roots: Path) -> dict[Path, bytes]:
    return {
        path: path.read_bytes()
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and not path.is_socket()
    }


def assert_no_plaintext(files: dict[Path, bytes], pcm: bytes) -> None:
    """No file holds audio in the clear: no FLAC or WAV header, no run of the PCM."""
    needles = [b"fLaC", b"RIFF", b"WAVE"] + [pcm[i : i + 16] for i in range(0, len(pcm), 4000)]
    for path, data in files.items():
        for needle in needles:
            assert needle not in data, f"{path} holds plaintext {needle!r}"


async def test_a_recorded_call_is_stereo_sealed_and_announced(
    worker: MediaWorkerProcess,
    call: Call,
    events: Events,
    settings: RecordingSettings,
    vault: Vault,
) -> None:
    port_a, port_b = free_port_pairs(2)
    await call.connect((port_a, port_b))
    assert call.ports["a"] == ["127.0.0.1", port_a]
    assert call.ports["b"] == ["127.0.0.1", port_b]
    again = await worker.command("create", call="c1", ports=[port_a, port_b])
    assert (again["a"], again["b"]) == (call.ports["a"], call.ports["b"])  # idempotent
    await call.record()
    await call.record()  # idempotent
    with pytest.raises(MediaError, match="already recorded as"):
        await worker.command("record", call="c1", recording=str(uuid.uuid4()))

    await call.talk(2.0)
    deleted = await worker.command("delete", call="c1")
    assert deleted["recording"] == str(call.recording)
    assert deleted["stats"]["a"]["forwarded"] == 100
    event = await next_event(events, "recording_ready")

    recording = event["recording"]
    assert event["call"] == "c1"
    assert {k: v for k, v in recording.items() if k not in ("bytes", "peaks", "counters")} == {
        "id": str(call.recording),
        "path": f"{call.recording}.flac",
        "format": "flac",
        "duration_seconds": recording["duration_seconds"],
        "interrupted": False,
        "truncated": None,
    }
    assert 1.95 <= recording["duration_seconds"] <= 2.6
    for leg in ("a", "b"):
        counters = recording["counters"][leg]
        assert counters["placed"] + counters["late"] == 100
        assert counters["placed"] >= 95
        assert counters["duplicates"] == counters["malformed"] == counters["muted"] == 0

    data = read(vault, call.recording, settings.recordings_dir / recording["path"])
    assert len(data) == recording["bytes"]
    frames, rate = decode(data)
    assert rate == RATE and frames.shape == (round(recording["duration_seconds"] * RATE), 2)
    middle = frames[4000:12000]
    assert dominant(middle[:, 0]) == pytest.approx(CALLER_HZ, abs=2)
    assert dominant(middle[:, 1]) == pytest.approx(CALLEE_HZ, abs=2)
    assert_prefix(frames[:, 0], call.expected("a"))
    assert_prefix(frames[:, 1], call.expected("b"))

    peaks = recording["peaks"]
    assert (peaks["buckets"], peaks["frames"], len(peaks["channels"])) == (800, len(frames), 2)
    for channel in peaks["channels"]:
        assert len(channel["min"]) == len(channel["max"]) == 800
        assert max(channel["max"]) > 0.2 and min(channel["min"]) < -0.2

    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == [recording["path"]]
    assert_no_plaintext(files_under(settings.recordings_dir.parent), frames.tobytes())
    assert (await worker.command("ping"))["recordings"] == 0


async def test_paused_audio_is_silence(
    worker: MediaWorkerProcess, call: Call, events: Events, vault: Vault, tmp_path: Path
) -> None:
    await call.connect()
    await call.record()
    await call.talk(0.6)
    await worker.command("pause", call="c1")
    await worker.command("pause", call="c1")  # idempotent
    assert (await worker.command("query", call="c1"))["recording"]["paused"] is True
    await call.talk(0.8)
    await worker.command("resume", call="c1")
    await call.talk(0.6)
    await worker.command("delete", call="c1")
    recording = (await next_event(events, "recording_ready"))["recording"]

    assert recording["counters"]["a"]["muted"] >= 35
    frames, _ = decode(read(vault, call.recording, vault_path(tmp_path, recording)))
    loud = (np.abs(frames) > 100).any(axis=1)  # either channel
    # Frames of 20 ms: loud, then a silent run of about the pause, then loud again.
    by_frame = loud[: len(loud) // 160 * 160].reshape(-1, 160).any(axis=1)
    first_loud = int(np.argmax(by_frame))
    runs = np.flatnonzero(np.diff(by_frame[first_loud:].astype(int))) + first_loud + 1
    assert len(runs) in (2, 3), runs  # silent from runs[0] to runs[1], (silent at the very end)
    silent = (runs[1] - runs[0]) * 0.02
    assert 0.6 <= silent <= 1.1
    assert 0.5 <= (runs[0] - first_loud) * 0.02 <= 0.75  # the 0.6 s before the pause


def vault_path(tmp_path: Path, recording: dict[str, Any]) -> Path:
    return tmp_path / "recordings" / recording["path"]


async def test_a_killed_worker_leaves_a_recording_that_recover_finishes(
    worker: MediaWorkerProcess,
    call: Call,
    events: Events,
    settings: RecordingSettings,
    vault: Vault,
) -> None:
    await call.connect()
    await call.record()
    await call.talk(1.6)
    # Until the drain has made a second of audio durable (the worker's own account).
    while (await worker.command("query", call="c1"))["recording"]["flushed_seconds"] < 1.0:
        await call.talk(0.1)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    lost = await next_event(events, "worker_lost")
    assert lost["calls"] == ["c1"]
    part = settings.recordings_dir / f"{call.recording}.raw.part"
    left = part.read_bytes()

    reply = await worker.command("recover")  # to the restarted worker
    assert reply["failed"] == []
    [recording] = reply["recordings"]
    assert recording["id"] == str(call.recording)
    assert recording["interrupted"] is True
    assert recording["counters"] is None
    assert recording["path"] == f"{call.recording}.flac"
    frames, _ = decode(read(vault, call.recording, settings.recordings_dir / recording["path"]))
    assert len(frames) == round(recording["duration_seconds"] * RATE)
    # Whole segments of what was flushed: at least a second less one 16 KiB segment.
    assert recording["duration_seconds"] >= 1.0 - 16384 / 4 / RATE
    assert_prefix(frames[:, 0], call.expected("a"))
    assert_prefix(frames[:, 1], call.expected("b"))
    assert_no_plaintext({part: left}, frames.tobytes())
    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == [recording["path"]]
    assert (await worker.command("recover"))["recordings"] == []  # nothing left twice


async def test_a_worker_killed_in_its_first_second_leaves_an_empty_wav(
    worker: MediaWorkerProcess, call: Call, events: Events, vault: Vault, tmp_path: Path
) -> None:
    await call.connect()
    await call.record()
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    await next_event(events, "worker_lost")
    [recording] = (await worker.command("recover"))["recordings"]
    assert (recording["path"], recording["format"]) == (f"{call.recording}.wav", "wav")
    assert recording["duration_seconds"] == 0 and recording["peaks"]["frames"] == 0
    frames, rate = decode(read(vault, call.recording, vault_path(tmp_path, recording)))
    assert frames.shape == (0, 2) and rate == RATE


async def test_recover_leaves_the_calls_being_recorded(
    worker: MediaWorkerProcess, call: Call, settings: RecordingSettings, vault: Vault
) -> None:
    # A raw stream closed by a worker that was stopped, its final file never made.
    left = uuid.uuid4()
    pcm = np.stack([call.expected("a"), call.expected("b")], axis=1).tobytes()
    vault.create_key(left)
    with vault.writer(left, settings.recordings_dir / f"{left}.raw") as out:
        out.write(pcm)
    await call.connect()
    await call.record()

    reply = await worker.command("recover")
    assert [r["id"] for r in reply["recordings"]] == [str(left)]
    frames, _ = decode(read(vault, left, settings.recordings_dir / f"{left}.flac"))
    assert frames.tobytes() == pcm  # lossless, whole
    assert (settings.recordings_dir / f"{call.recording}.raw.part").exists()
    assert (await worker.command("query", call="c1"))["recording"]["id"] == str(call.recording)


async def test_a_stopped_worker_closes_its_raw_files_for_the_next_one(
    make_worker: MakeWorker,
    peer: Callable[..., Awaitable[Peer]],
    settings: RecordingSettings,
    vault: Vault,
) -> None:
    first = await make_worker()
    call = Call(first, "c1", await peer(), await peer(), seconds=1.0)
    await call.connect()
    await call.record()
    await call.talk(1.0)
    await first.stop()  # SIGTERM, as at the server's shutdown
    assert [p.name for p in settings.recordings_dir.iterdir()] == [f"{call.recording}.raw"]

    second = await make_worker()
    [recording] = (await second.command("recover"))["recordings"]
    frames, _ = decode(read(vault, call.recording, settings.recordings_dir / recording["path"]))
    # Everything up to the stop: nothing was lost to the drain's once-a-second rhythm.
    offset = start_of(frames[:, 0], call.expected("a"))
    assert len(frames) - offset >= 50 * 160
    assert_prefix(frames[:, 0], call.expected("a"))


async def test_media_timeout_then_delete_finalises_the_recording(
    make_worker: MakeWorker, peer: Callable[..., Awaitable[Peer]], events: Events
) -> None:
    worker = await make_worker(media_timeout=0.5)
    call = Call(worker, "quiet", await peer(), await peer(), seconds=1.0)
    await call.connect()
    await call.record()
    await call.talk(0.2)
    assert await next_event(events, "media_timeout") == {"event": "media_timeout", "call": "quiet"}
    assert (await worker.command("delete", call="quiet"))["recording"] == str(call.recording)
    recording = (await next_event(events, "recording_ready"))["recording"]
    assert recording["counters"]["a"]["placed"] == 10


async def test_ports_already_bound_are_refused_and_nothing_leaks(
    worker: MediaWorkerProcess,
) -> None:
    port_a, port_b = free_port_pairs(2)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", port_b + 1))  # leg b's RTCP port: bound last
    try:
        with pytest.raises(MediaError, match=f"cannot bind RTP ports \\({port_a}, {port_b}\\)"):
            await worker.command("create", call="c1", ports=[port_a, port_b])
    finally:
        squatter.close()
    assert (await worker.command("ping"))["sessions"] == 0
    assert (await worker.command("ping"))["ports_in_use"] == 0
    for port in (port_a, port_a + 1, port_b):  # released by the worker
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))

    await worker.command("create", call="c1", ports=[port_a, port_b])
    with pytest.raises(MediaError, match=f"RTP port {port_a} is in use by another call"):
        await worker.command("create", call="c2", ports=[port_a, port_b])
    with pytest.raises(MediaError, match="already has other ports"):
        await worker.command("create", call="c1", ports=[port_b, port_a])
    with pytest.raises(MediaError, match="bad ports"):
        await worker.command("create", call="c3", ports=[41001, 41002])
    assert (await worker.command("ping"))["ports_in_use"] == 2


async def test_recording_commands_need_a_relay_and_a_uuid(
    worker: MediaWorkerProcess, call: Call
) -> None:
    with pytest.raises(MediaError, match="no relay for call 'c1'"):
        await call.record()
    await call.connect()
    with pytest.raises(MediaError, match="'nope' is not a UUID"):
        await worker.command("record", call="c1", recording="nope")
    with pytest.raises(MediaError, match="call 'c1' is not being recorded"):
        await worker.command("pause", call="c1")
    assert (await worker.command("delete", call="c1"))["recording"] is None


async def test_g711_on_a_dynamic_payload_type_is_recorded(
    worker: MediaWorkerProcess, call: Call, events: Events
) -> None:
    # The callee's SDP said a=rtpmap:96 PCMU/8000.
    call.packets["b"] = [
        data[:1] + bytes([data[1] & 0x80 | 96]) + data[2:] for data in call.packets["b"]
    ]
    await call.connect()
    with pytest.raises(MediaError, match="bad payload_types"):
        await worker.command(
            "record", call="c1", recording=str(call.recording), payload_types={"96": "G729"}
        )
    with pytest.raises(MediaError, match="payload type 8 is not dynamic"):
        await worker.command(
            "record", call="c1", recording=str(call.recording), payload_types={"8": "PCMU"}
        )
    await worker.command(
        "record", call="c1", recording=str(call.recording), payload_types={"96": "PCMU"}
    )
    await call.talk(0.5)
    await worker.command("delete", call="c1")
    counters = (await next_event(events, "recording_ready"))["recording"]["counters"]
    assert counters["b"]["placed"] + counters["b"]["late"] == 25
    assert counters["b"]["skipped"] == 0


async def test_a_long_recover_does_not_hold_up_other_calls(
    worker: MediaWorkerProcess, settings: RecordingSettings, vault: Vault
) -> None:
    left = uuid.uuid4()
    vault.create_key(left)
    noise = np.random.default_rng(7).integers(-3000, 3000, (300 * RATE, 2), dtype=np.int16)
    with vault.writer(left, settings.recordings_dir / f"{left}.raw") as out:
        out.write(noise.tobytes())  # five minutes: a while to decrypt, encode and seal
    recovering = worker.send_nowait("recover")
    creating = worker.send_nowait("create", call="c1")
    done, _ = await asyncio.wait({recovering, creating}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {creating}
    [recording] = (await recovering)["recordings"]
    assert recording["duration_seconds"] == 300


async def test_the_recording_notice_is_played_to_the_caller_in_real_time(
    worker: MediaWorkerProcess, call: Call
) -> None:
    await call.connect()
    reply = await worker.command("play", call="c1", prompt="recording-notice", codec="PCMA")
    assert reply["packets"] == 50  # 1 s of 20 ms packets
    packets = [parse_rtp((await call.caller.next())[0]) for _ in range(50)]
    assert {p.payload_type for p in packets} == {8}
    assert [p.sequence for p in packets] == [(packets[0].sequence + i) % 65536 for i in range(50)]
    assert call.callee.received.empty()  # the prompt is for the caller only
    with pytest.raises(MediaError, match="unknown prompt"):
        await worker.command("play", call="c1", prompt="jingle", codec="PCMU")


async def received_prompt(caller: Peer, count: int) -> tuple[set[int], bytes]:
    """The payload types and the G.711 payload of the ``count`` packets the caller was sent."""
    packets = [parse_rtp((await caller.next())[0]) for _ in range(count)]
    assert [p.sequence for p in packets] == [
        (packets[0].sequence + i) % 65536 for i in range(count)
    ]
    return {p.payload_type for p in packets}, b"".join(p.payload for p in packets)


async def test_an_operators_prompt_is_played_read_again_when_edited_and_refused_when_gone(
    make_worker: MakeWorker, peer: Callable[..., Awaitable[Peer]], tmp_path: Path
) -> None:
    """The file is read when first played and kept; an edit is heard on the next play; a file
    removed since is refused, the worker carries on."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    # Noise, not a tone: any sample out of place or any packet repeated shows.
    words = np.random.default_rng(3).integers(-8000, 8000, 8000 * 7 // 10, dtype=np.int16)
    soundfile.write(prompts / "greeting.wav", words, RATE, subtype="PCM_16")
    worker = await make_worker(prompts=prompts)
    call = Call(worker, "c1", await peer(), await peer(), seconds=1.0)
    await call.connect()

    reply = await worker.command("play", call="c1", prompt="greeting", codec="PCMA")
    assert reply["packets"] == 35  # 0.7 s in 20 ms packets
    types, payload = await received_prompt(call.caller, 35)
    assert types == {8}
    assert payload == alaw_encode(words)
    assert call.callee.received.empty()  # the prompt is for the caller only

    edited = words[: 8000 * 3 // 10 + 40]  # 0.305 s: the last packet filled with silence
    soundfile.write(prompts / "greeting.wav", edited, RATE, subtype="PCM_16")
    reply = await worker.command("play", call="c1", prompt="greeting", codec="PCMU")
    assert reply["packets"] == 16
    types, payload = await received_prompt(call.caller, 16)
    assert types == {0}
    padded = np.concatenate([edited, np.zeros(120, dtype=np.int16)])
    assert payload == ulaw_encode(padded)

    (prompts / "greeting.wav").unlink()
    with pytest.raises(MediaError, match=r"greeting\.wav: cannot read the prompt"):
        await worker.command("play", call="c1", prompt="greeting", codec="PCMU")
    with pytest.raises(MediaError, match="is not a prompt name"):
        await worker.command("play", call="c1", prompt="../recordings/x", codec="PCMU")
    reply = await worker.command("play", call="c1", prompt="recording-notice", codec="PCMU")
    assert reply["packets"] == 50  # the worker plays on


async def test_five_percent_loss_keeps_the_recordings_length_and_alignment(
    worker: MediaWorkerProcess,
    call: Call,
    events: Events,
    settings: RecordingSettings,
    vault: Vault,
) -> None:
    """Packets lost between the parties and the relay become silence in their own place: the
    file is as long as without loss and every packet that arrived sits where it belongs."""
    chooser = random.Random(20261125)
    for leg in ("a", "b"):
        # Never the first packet, which anchors the stream (its arrival is the reference).
        call.lost[leg] = {i for i in range(1, 100) if chooser.random() < 0.05}
    assert call.lost["a"] and call.lost["b"]
    await call.connect()
    await call.record()
    await call.talk(2.0)
    await worker.command("delete", call="c1")
    recording = (await next_event(events, "recording_ready"))["recording"]
    assert 1.95 <= recording["duration_seconds"] <= 2.6  # as long as the lossless call
    frames, _ = decode(read(vault, call.recording, settings.recordings_dir / recording["path"]))
    for column, leg in ((0, "a"), (1, "b")):
        channel, expected = frames[:, column], call.expected(leg)
        start = start_of(channel, expected)
        late = recording["counters"][leg]["late"]
        wrong = 0
        for index in range(100):
            got = channel[start + index * 160 : start + (index + 1) * 160]
            want = expected[index * 160 : (index + 1) * 160]
            if index in call.lost[leg]:
                assert not got.any(), (leg, index)  # a lost packet is silence, in its place
            elif not np.array_equal(got, want):
                wrong += 1
        assert wrong <= late, (leg, wrong, late)  # only packets counted late may be missing


async def test_a_raw_file_that_cannot_grow_keeps_the_recording_so_far_flagged_truncated(
    make_worker: MakeWorker,
    events: Events,
    settings: RecordingSettings,
    vault: Vault,
    peer: Callable[..., Awaitable[Peer]],
) -> None:
    """A write that fails mid-call (here EFBIG: the worker runs under a file size limit, a
    stand-in for a full disk that needs no root) ends the recording, keeps what was written
    and finalises it as FLAC, flagged truncated; the call itself goes on."""
    limit = 40 * 1024  # about 1.2 s of raw stereo audio; the encoded tone is far smaller
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        worker = await make_worker()  # the limit is inherited by the worker alone
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    call = Call(worker, "c1", await peer(), await peer(), seconds=4.0)
    await call.connect()
    await call.record()
    await call.talk(4.0)
    # The recording stopped short, the relay did not.
    assert (await worker.command("query", call="c1"))["recording"] is None
    await worker.command("delete", call="c1")
    recording = (await next_event(events, "recording_ready"))["recording"]
    assert recording["truncated"] == "the recording could not be written (File too large)"
    assert recording["format"] == "flac" and not recording["interrupted"]
    kept = recording["duration_seconds"]
    assert 0.5 <= kept <= limit / 4 / RATE, kept
    audio, _ = decode(read(vault, call.recording, settings.recordings_dir / recording["path"]))
    assert len(audio) == round(kept * RATE)
    window = audio[len(audio) // 2 - 1600 : len(audio) // 2 + 1600]
    assert abs(dominant(window[:, 0]) - CALLER_HZ) < 10
    assert abs(dominant(window[:, 1]) - CALLEE_HZ) < 10
    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == [recording["path"]]


async def test_a_restarted_worker_recovers_its_own_and_orphaned_raw_streams_never_another_s(
    tmp_path: Path,
    settings: RecordingSettings,
    vault: Vault,
    peer: Callable[..., Awaitable[Peer]],
) -> None:
    recordings = settings.recordings_dir
    # Raw streams no running worker owns: one from before there were several workers (in the
    # recordings directory itself), one of a worker numbered past the two configured now.
    orphans = orphaned_raw_directories(recordings, 2)
    assert orphans == (recordings,)
    left = {uuid.uuid4(): recordings, uuid.uuid4(): raw_directory(recordings, 5)}
    pcm = np.zeros((800, 2), dtype=np.int16).tobytes()
    for recording_id, directory in left.items():
        directory.mkdir(parents=True, exist_ok=True)
        vault.create_key(recording_id)
        with vault.writer(recording_id, directory / f"{recording_id}.raw") as out:
            out.write(pcm)
    orphans = orphaned_raw_directories(recordings, 2)
    assert orphans == (recordings, raw_directory(recordings, 5))
    async with AsyncExitStack() as stack:
        workers = []
        for number, ports in enumerate(("41200-41249", "41250-41299")):
            worker = MediaWorkerProcess(
                tmp_path / f"media-{number}.sock",
                "127.0.0.1",
                ports,
                recording=dataclasses.replace(
                    settings,
                    raw_dir=raw_directory(recordings, number),
                    adopt=orphans if number == 0 else (),
                ),
            )
            await worker.start()
            stack.push_async_callback(worker.stop)
            workers.append(worker)
        zero, one = workers
        # Worker 1 is recording a call, its parties talking all along, while worker 0 is killed,
        # restarted and recovers.
        live = Call(one, "live", await peer(), await peer(), seconds=3.0)
        await live.connect()
        await live.record()
        talking = asyncio.create_task(live.talk(3.0))
        clock = asyncio.get_running_loop().time
        deadline = clock() + WAIT
        while (await one.command("query", call="live"))["recording"]["flushed_seconds"] < 0.5:
            assert clock() < deadline, "worker 1 flushed nothing"
            await asyncio.sleep(0.05)
        assert zero.pid is not None
        os.kill(zero.pid, signal.SIGKILL)
        deadline = clock() + WAIT
        while not (zero.restarts == 1 and zero.running):
            assert clock() < deadline, "worker 0 was not restarted"
            await asyncio.sleep(0.05)
        reply = await zero.command("recover")
        assert sorted(r["id"] for r in reply["recordings"]) == sorted(str(i) for i in left)
        assert reply["failed"] == []
        for recording_id in left:
            frames, _ = decode(read(vault, recording_id, recordings / f"{recording_id}.flac"))
            assert frames.tobytes() == pcm
        # Worker 1's call went on untouched: its raw stream is still its own, and it ends whole.
        assert (raw_directory(recordings, 1) / f"{live.recording}.raw.part").exists()
        await talking
        events: Events = asyncio.Queue()
        one.on_event = events.put_nowait
        await one.command("delete", call="live")
        recording = (await next_event(events, "recording_ready"))["recording"]
        assert recording["interrupted"] is False
        frames, _ = decode(read(vault, live.recording, recordings / recording["path"]))
        assert_prefix(frames[:, 0], live.expected("a"))
        assert_prefix(frames[:, 1], live.expected("b"))
        assert len(frames) - start_of(frames[:, 0], live.expected("a")) >= 145 * 160
