"""Recording files (FLAC, WAV) and waveform peaks."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from callrouter.media.encoding import AudioFormatError, decode, encode, peaks


def stereo(frames: int, seed: int = 0) -> np.ndarray[tuple[int, int], np.dtype[np.int16]]:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, size=(frames, 2), dtype=np.int16)


@pytest.mark.parametrize("format", ["flac", "wav"])
def test_round_trip_is_lossless(format: Literal["flac", "wav"]) -> None:
    audio = stereo(8000)
    audio[0] = (-32768, 32767)  # the extremes survive too
    data = encode(audio.tobytes(), format)
    decoded, rate = decode(data)
    assert rate == 8000
    assert decoded.dtype == np.int16
    assert np.array_equal(decoded, audio)


def test_the_file_says_what_it_is() -> None:
    audio = stereo(100).tobytes()
    assert encode(audio, "flac").startswith(b"fLaC")
    wav = encode(audio, "wav", rate=16000)
    assert wav[:4] == b"RIFF"
    assert wav[8:12] == b"WAVE"
    assert decode(wav)[1] == 16000


def test_flac_is_smaller_than_wav_for_speechlike_audio() -> None:
    t = np.arange(80000) / 8000
    voice = (8000 * np.sin(2 * np.pi * 300 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.int16)
    pcm = np.stack([voice, voice // 3], axis=1).tobytes()
    assert len(encode(pcm, "flac")) < len(encode(pcm, "wav")) / 2


@given(hnp.arrays(np.int16, st.tuples(st.integers(1, 300), st.just(2))))
def test_any_audio_round_trips_through_flac(audio: np.ndarray) -> None:
    decoded, _ = decode(encode(audio.tobytes(), "flac"))
    assert np.array_equal(decoded, audio)


def test_empty_audio() -> None:
    decoded, _ = decode(encode(b"", "wav"))
    assert decoded.shape == (0, 2)
    with pytest.raises(AudioFormatError, match="FLAC cannot hold an empty recording"):
        encode(b"", "flac")


def test_pcm_that_is_not_whole_stereo_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="4 bytes a frame; 6 bytes is not"):
        encode(b"\x00" * 6, "wav")


def test_garbage_is_not_a_file() -> None:
    with pytest.raises(AudioFormatError, match="not a readable FLAC or WAV file"):
        decode(b"this is not audio" * 10)


def test_peaks_of_a_known_signal() -> None:
    audio = np.zeros((1000, 2), dtype=np.int16)
    audio[100, 0] = 16384  # bucket 0 of 4 on the left
    audio[300, 0] = -32768  # bucket 1
    audio[999, 1] = 32767  # last bucket on the right
    summary = peaks(audio.tobytes(), 4)
    assert summary == {
        "buckets": 4,
        "frames": 1000,
        "channels": [
            {"min": [0.0, -1.0, 0.0, 0.0], "max": [0.5, 0.0, 0.0, 0.0]},
            {"min": [0.0, 0.0, 0.0, 0.0], "max": [0.0, 0.0, 0.0, 1.0]},
        ],
    }
    assert json.loads(json.dumps(summary)) == summary


@given(st.integers(0, 500), st.integers(1, 300))
def test_peaks_shape_and_bounds(frames: int, buckets: int) -> None:
    audio = stereo(frames, seed=frames)
    summary = peaks(audio, buckets)
    assert summary["buckets"] == buckets
    assert summary["frames"] == frames
    assert len(summary["channels"]) == 2
    for channel, values in zip(audio.T, summary["channels"], strict=True):
        assert len(values["min"]) == len(values["max"]) == buckets
        pairs = zip(values["min"], values["max"], strict=True)
        assert all(-1.0 <= low <= high <= 1.0 for low, high in pairs)
        if frames >= buckets:  # no bucket is empty
            assert min(values["min"]) == round(channel.min() / 32768, 4)
            assert max(values["max"]) == round(channel.max() / 32768, 4)


def test_peaks_with_fewer_frames_than_buckets_leave_empty_buckets_at_zero() -> None:
    audio = np.array([[32767, -32768], [-16384, 16384]], dtype=np.int16)
    left, right = peaks(audio, 4)["channels"]
    assert left == {"min": [0.0, 1.0, 0.0, -0.5], "max": [0.0, 1.0, 0.0, -0.5]}
    assert right == {"min": [0.0, -1.0, 0.0, 0.5], "max": [0.0, -1.0, 0.0, 0.5]}


def test_peaks_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="buckets must be at least 1"):
        peaks(b"", 0)
    with pytest.raises(ValueError, match=r"shape \(frames, channels\)"):
        peaks(np.zeros(10, dtype=np.int16), 2)
