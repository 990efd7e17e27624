"""Recording files: stereo int16 PCM to FLAC or WAV bytes and back, and waveform peaks.

Everything stays in memory (``io.BytesIO``): the media worker encrypts the bytes before they
touch disk, so no plaintext file is ever written.
"""

from __future__ import annotations

import io
from typing import Final, Literal, TypedDict

import numpy as np
import soundfile
from numpy.typing import NDArray

__all__ = ["AudioFormatError", "ChannelPeaks", "Peaks", "decode", "encode", "peaks"]

_FORMATS: Final = {"flac": "FLAC", "wav": "WAV"}
_FULL_SCALE: Final = 32768.0


class AudioFormatError(ValueError):
    """Bytes that are not a readable audio file, or audio that the format cannot hold."""


class ChannelPeaks(TypedDict):
    """The extremes of one channel, one value per bucket, scaled to -1..1."""

    min: list[float]
    max: list[float]


class Peaks(TypedDict):
    """A waveform summary for a player: JSON as it is."""

    buckets: int
    """How many buckets each channel list has."""
    frames: int
    """Sample frames summarised; bucket ``i`` covers ``[i * frames // buckets, (i + 1) * frames
    // buckets)``, and is 0 when that is empty (fewer frames than buckets)."""
    channels: list[ChannelPeaks]
    """Left (caller) first, then right (callee)."""


def _stereo(pcm: bytes) -> NDArray[np.int16]:
    if len(pcm) % 4:
        raise ValueError(f"stereo int16 PCM is 4 bytes a frame; {len(pcm)} bytes is not")
    return np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)


def encode(pcm: bytes, format: Literal["flac", "wav"], rate: int = 8000) -> bytes:
    """Encode interleaved little-endian int16 stereo PCM as a FLAC or WAV file, losslessly.

    :param pcm: what :class:`~callrouter.media.recorder.StereoRecorder` returns.
    :param format: "flac" (about half the size of WAV for speech) or "wav".
    :param rate: samples per second.
    :raises AudioFormatError: for empty audio as FLAC (libsndfile writes no stream for it).
    """
    frames = _stereo(pcm)
    if format == "flac" and not len(frames):
        raise AudioFormatError("FLAC cannot hold an empty recording")
    out = io.BytesIO()
    soundfile.write(out, frames, rate, subtype="PCM_16", format=_FORMATS[format])
    return out.getvalue()


def decode(data: bytes) -> tuple[NDArray[np.int16], int]:
    """Read a FLAC or WAV file.

    :returns: (int16 array of shape (frames, channels), samples per second).
    :raises AudioFormatError: when libsndfile cannot read the bytes.
    """
    try:
        frames, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise AudioFormatError(f"not a readable FLAC or WAV file: {exc.error_string}") from None
    return frames, int(rate)


def peaks(audio: bytes | NDArray[np.int16], buckets: int) -> Peaks:
    """Per channel, the minimum and maximum of each of ``buckets`` equal slices of the audio.

    :param audio: interleaved stereo int16 PCM, or an int16 array of shape (frames, channels).
    :param buckets: how many values per channel, e.g. the player's width in pixels.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    frames = _stereo(audio) if isinstance(audio, bytes) else np.asarray(audio, dtype=np.int16)
    if frames.ndim != 2:
        raise ValueError(f"audio must have shape (frames, channels), not {frames.shape}")
    count = len(frames)
    edges = np.arange(buckets + 1) * count // buckets
    empty = edges[1:] == edges[:-1]
    channels: list[ChannelPeaks] = []
    for channel in frames.T:
        if count:
            # Every start is below ``count``; for an empty bucket reduceat returns the element
            # at its start, which is zeroed.
            low = np.where(empty, 0, np.minimum.reduceat(channel, edges[:-1]))
            high = np.where(empty, 0, np.maximum.reduceat(channel, edges[:-1]))
        else:
            low = high = np.zeros(buckets, dtype=np.int16)
        channels.append(
            {
                "min": np.round(low / _FULL_SCALE, 4).tolist(),
                "max": np.round(high / _FULL_SCALE, 4).tolist(),
            }
        )
    return {"buckets": buckets, "frames": count, "channels": channels}
