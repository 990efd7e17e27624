"""Recorder post-processing speed, as a realtime factor: seconds of call audio handled per CPU
second, for placement+decode in StereoRecorder, FLAC encoding, and both; and placement+decode
against a bare numpy decode of the same payloads in the same run.

The call is synthetic: two legs of PCMU in 20 ms packets, 5 % of them lost, up to 40 ms of
jitter (so neighbours often arrive swapped), pulled every simulated second as the worker does.

    python3 bench/recorder.py [--seconds 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.media.encoding import encode  # noqa: E402
from callrouter.media.g711 import ULAW_TO_LINEAR  # noqa: E402
from callrouter.media.prompt import packetize  # noqa: E402
from callrouter.media.recorder import StereoRecorder  # noqa: E402
from callrouter.media.rtp import parse_rtp  # noqa: E402

Event = tuple[float, str, bytes]


def speechlike(seconds: float, pitch: float, seed: int) -> NDArray[np.int16]:
    """A voiced buzz with syllable-rate loudness and pauses, plus a little noise: compresses
    like speech does (FLAC on pure tones would flatter the figure)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 8000)) / 8000
    voice = np.zeros_like(t)
    for harmonic in range(1, 8):
        voice += np.sin(2 * np.pi * pitch * harmonic * t) / harmonic
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None)
    turns = (np.sin(2 * np.pi * t / 7.0 + seed) > -0.3).astype(float)  # each talks in turns
    noise = rng.normal(0, 0.02, len(t))
    audio: NDArray[np.int16] = np.round((voice * syllables * turns * 0.25 + noise) * 8000).astype(
        np.int16
    )
    return audio


def call(seconds: float) -> list[Event]:
    rng = random.Random(6)
    events: list[Event] = []
    for name, pitch, ssrc in (("a", 140.0, 0x1111), ("b", 210.0, 0x2222)):
        audio = speechlike(seconds, pitch, seed=ssrc)
        packets = packetize(
            audio, ssrc=ssrc, sequence=rng.randrange(65536), timestamp=rng.randrange(2**32)
        )
        for index, packet in enumerate(packets):
            if rng.random() < 0.05:
                continue  # lost
            # Up to 40 ms of jitter on a 20 ms grid: neighbours often swap places.
            arrival = index * 0.02 + rng.uniform(0, 0.04)
            events.append((arrival, name, packet))
    events.sort(key=lambda event: event[0])
    return events


def record(events: list[Event], seconds: float, recorder: StereoRecorder | None = None) -> bytes:
    recorder = recorder or StereoRecorder(0.0)
    chunks = []
    next_pull = 1.0
    for arrival, leg, packet in events:
        if arrival >= next_pull:
            chunks.append(recorder.pull(arrival))
            next_pull += 1.0
        recorder.packet(leg, packet, arrival)
    chunks.append(recorder.finish(max(seconds, events[-1][0])))
    return b"".join(chunks)


def cpu_seconds(work: Callable[[], object], repeat: int) -> float:
    work()  # warm up
    start = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    seconds, repeat = args.seconds, args.repeat

    events = call(seconds)
    check = StereoRecorder(0.0)
    pcm = record(events, seconds, check)
    payloads = [parse_rtp(packet).payload for _, _, packet in events]
    flac = encode(pcm, "flac")

    placing = cpu_seconds(lambda: record(events, seconds), repeat)
    encoding = cpu_seconds(lambda: encode(pcm, "flac"), repeat)
    bare = cpu_seconds(
        lambda: [ULAW_TO_LINEAR[np.frombuffer(payload, np.uint8)] for payload in payloads],
        repeat,
    )

    print(
        f"{seconds:.0f} s two-leg PCMU call, {len(events):,} packets delivered "
        f"(5 % lost, jittered), pulled every second; CPU time averaged over {repeat} runs"
    )
    print(f"  recorded {len(pcm) / 4 / 8000:.3f} s; counters {check.counters}")
    print(f"  (a) StereoRecorder placement + decode: {seconds / placing:9.0f} x realtime")
    print(
        f"  (b) FLAC encoding (soundfile):         {seconds / encoding:9.0f} x realtime   "
        f"({len(flac) / len(pcm):.0%} of PCM size)"
    )
    print(
        f"  (c) both:                              {seconds / (placing + encoding):9.0f} x realtime"
    )
    print(f"  bare numpy decode, same payloads:      {seconds / bare:9.0f} x realtime")
    print(f"  ratio (a) / bare decode:               {bare / placing:9.2f}")


if __name__ == "__main__":
    main()
