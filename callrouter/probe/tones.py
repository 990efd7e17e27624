"""Was a tone heard? The share of a recording's energy near one frequency (numpy FFT).

A relay that drops a direction leaves silence (or comfort noise) in the recording; one that
crosses the legs gives the caller its own tone back. Both fail here: the test asks for the
other party's frequency specifically.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["rms", "tone_share"]

_BAND_HZ = 25.0


def _read(path: Path) -> tuple[NDArray[np.float64], int]:
    """The first channel as floats, and the sample rate."""
    with wave.open(str(path), "rb") as audio:
        if audio.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        rate = audio.getframerate()
        channels = audio.getnchannels()
        samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0]
    return samples.astype(np.float64), rate


def rms(path: Path) -> float:
    """Root mean square level in 16-bit units (silence: 0; a -20 dBFS tone: about 3300)."""
    signal, _ = _read(path)
    return float(np.sqrt(np.mean(signal**2))) if signal.size else 0.0


def tone_share(path: Path, frequency: float) -> float:
    """The fraction (0..1) of the audio's energy within 25 Hz of ``frequency``; 0 for none."""
    signal, rate = _read(path)
    if signal.size < rate // 10 or not np.any(signal):
        return 0.0
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size))) ** 2
    frequencies = np.fft.rfftfreq(signal.size, 1.0 / rate)
    total = float(spectrum[frequencies > 50.0].sum())
    band = float(spectrum[np.abs(frequencies - frequency) <= _BAND_HZ].sum())
    return band / total if total > 0 else 0.0
