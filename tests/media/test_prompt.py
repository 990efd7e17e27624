"""Prompts: audio to RTP packets, operators' WAV files, the default recording notice."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import soundfile
from hypothesis import given
from hypothesis import strategies as st

from callrouter.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callrouter.media.prompt import (
    PromptCache,
    PromptError,
    load_prompt,
    packetize,
    recording_notice_tone,
    tone,
)
from callrouter.media.recorder import StereoRecorder
from callrouter.media.rtp import parse_rtp

CODECS = {"PCMU": (0, ulaw_encode, ulaw_decode), "PCMA": (8, alaw_encode, alaw_decode)}


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_packets_carry_the_audio_in_20_ms_steps(codec: Literal["PCMU", "PCMA"]) -> None:
    payload_type, encode, decode = CODECS[codec]
    audio = tone(440.0, 0.05)  # 400 samples: two whole packets and half of a third
    packets = [
        parse_rtp(data)
        for data in packetize(audio, codec=codec, ssrc=0xCAFE, sequence=7, timestamp=1000)
    ]
    assert [p.sequence for p in packets] == [7, 8, 9]
    assert [p.timestamp for p in packets] == [1000, 1160, 1320]
    assert [p.marker for p in packets] == [True, False, False]
    assert {(p.payload_type, p.ssrc, len(p.payload)) for p in packets} == {
        (payload_type, 0xCAFE, 160)
    }
    carried = b"".join(p.payload for p in packets)
    assert carried[:400] == encode(audio)
    assert carried[400:] == encode(np.zeros(80, dtype=np.int16))  # filled with silence
    assert np.array_equal(decode(carried[:400]), decode(encode(audio)))


def test_sequence_and_timestamp_wrap() -> None:
    packets = [
        parse_rtp(data)
        for data in packetize(tone(440.0, 0.06), ssrc=1, sequence=65535, timestamp=2**32 - 160)
    ]
    assert [p.sequence for p in packets] == [65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 160, 0, 160]


@given(st.integers(0, 1000))
def test_packet_count(samples: int) -> None:
    packets = packetize(np.zeros(samples, dtype=np.int16), ssrc=1, sequence=0, timestamp=0)
    assert len(packets) == -(-samples // 160)


def test_a_prompt_recorded_by_the_recorder_comes_back() -> None:
    audio = recording_notice_tone()
    recorder = StereoRecorder(0.0)
    for index, data in enumerate(packetize(audio, ssrc=9, sequence=0, timestamp=0)):
        recorder.packet("b", data, index * 0.02)
    pcm = np.frombuffer(recorder.finish(1.0), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(pcm[:, 1], ulaw_decode(ulaw_encode(audio)))
    assert not pcm[:, 0].any()


def test_the_recording_notice_is_three_1400_hz_beeps() -> None:
    audio = recording_notice_tone()
    assert audio.dtype == np.int16
    assert len(audio) == 8000  # one second
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    assert np.argmax(spectrum) * 8000 / len(audio) == pytest.approx(1400.0, abs=1.0)
    sounding = np.abs(audio).reshape(-1, 80).max(axis=1) > 0  # per 10 ms
    assert np.flatnonzero(np.diff(sounding.astype(int), prepend=0) == 1).tolist() == [0, 40, 80]
    # -10 dBm0: about 7,200 peak on the int16 scale, well clear of overload.
    assert 7000 < np.abs(audio).max() < 7400
    assert audio[0] == 0  # ramped in, so no click


def test_tone_refuses_frequencies_8_khz_cannot_carry() -> None:
    with pytest.raises(ValueError, match="between 0 and 4000 Hz"):
        tone(4000.0, 1.0)


def test_an_operators_wav_file(tmp_path: Path) -> None:
    audio = tone(600.0, 0.5, level_dbm0=-20.0)
    path = tmp_path / "notice.wav"
    soundfile.write(path, audio, 8000, subtype="PCM_16")
    assert np.array_equal(load_prompt(path), audio)


@pytest.mark.parametrize(
    ("rate", "channels", "described"),
    [(16000, 1, "1 channel(s) at 16000 Hz"), (8000, 2, "2 channel(s) at 8000 Hz")],
)
def test_a_wav_file_that_is_not_mono_8_khz_is_refused_with_the_fix(
    tmp_path: Path, rate: int, channels: int, described: str
) -> None:
    path = tmp_path / "notice.wav"
    soundfile.write(path, np.zeros((rate, channels), dtype=np.int16), rate, subtype="PCM_16")
    with pytest.raises(PromptError) as caught:
        load_prompt(path)
    assert str(caught.value) == (
        f"{path}: a prompt must be mono at 8000 Hz, this is {described}; "
        f"convert it with: sox '{path}' -r 8000 -c 1 -b 16 prompt.wav"
    )


def test_an_unreadable_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "notice.wav"
    path.write_bytes(b"not a wav file at all")
    with pytest.raises(PromptError, match="cannot read the prompt"):
        load_prompt(path)
    with pytest.raises(PromptError, match="cannot read the prompt"):
        load_prompt(tmp_path / "missing.wav")


def test_the_prompt_cache_keeps_the_prompts_played_last_while_their_files_are_unchanged(
    tmp_path: Path,
) -> None:
    cache = PromptCache(tmp_path, size=2)
    kept = {}
    for name in ("one", "two", "three"):
        soundfile.write(tmp_path / f"{name}.wav", tone(600.0, 0.1), 8000, subtype="PCM_16")
        path, stamp = cache.stamp(name)
        assert path == tmp_path / f"{name}.wav"
        cache.keep(name, stamp, load_prompt(path))
        kept[name] = stamp
    assert cache.kept("one", kept["one"]) is None  # the least recently played went first
    assert cache.kept("two", kept["two"]) is not None
    soundfile.write(tmp_path / "two.wav", tone(600.0, 0.2), 8000, subtype="PCM_16")
    _path, edited = cache.stamp("two")
    assert edited != kept["two"] and cache.kept("two", edited) is None  # read again
    (tmp_path / "three.wav").unlink()
    with pytest.raises(PromptError, match=r"three\.wav: cannot read the prompt"):
        cache.stamp("three")
    with pytest.raises(PromptError, match="is not a prompt name"):
        cache.stamp("../three")
