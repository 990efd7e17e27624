"""Prompts played into a call: audio to 20 ms G.711 RTP packets, and the default notice.

There is no speech synthesis here. The default recording notice is the recorder warning tone
(:func:`recording_notice_tone`); operators who want words ("this call may be recorded")
configure their own WAV file, mono at 8 kHz, read with :func:`load_prompt`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import numpy as np
import soundfile
from numpy.typing import NDArray

from callrouter.media.g711 import RATE, alaw_encode, ulaw_encode
from callrouter.media.rtp import PAYLOAD_PCMA, PAYLOAD_PCMU, RtpPacket

__all__ = ["PromptError", "load_prompt", "packetize", "recording_notice_tone", "tone"]

PTIME: Final = 0.020
"""Seconds of audio per packet: 20 ms, the default for G.711 (RFC 3551 §4.2, Table 1)."""
SAMPLES_PER_PACKET: Final = round(RATE * PTIME)
# G.711 puts the theoretical maximum load at +3.14 dBm0 (A-law; +3.17 for µ-law), so a 0 dBm0
# sine peaks 3.14 dB below full scale: about 22,700 on the int16 scale.
_DBM0_PEAK: Final = 32768 * 10 ** (-3.14 / 20)


class PromptError(ValueError):
    """A prompt file the media worker cannot play, with what to do about it."""


def tone(frequency: float, seconds: float, level_dbm0: float = -10.0) -> NDArray[np.int16]:
    """A sine tone at 8 kHz with 5 ms raised-cosine ramps, so it starts and stops without a click.

    :param frequency: Hz, below 4000.
    :param seconds: length.
    :param level_dbm0: level relative to the G.711 digital milliwatt.
    """
    if not 0 < frequency < RATE / 2:
        raise ValueError(f"a tone at {RATE} Hz must be between 0 and {RATE // 2} Hz")
    count = round(seconds * RATE)
    wave = np.sin(2 * math.pi * frequency * np.arange(count) / RATE)
    ramp = min(round(0.005 * RATE), count // 2)
    if ramp:
        edge = 0.5 - 0.5 * np.cos(math.pi * np.arange(ramp) / ramp)
        wave[:ramp] *= edge
        wave[count - ramp :] *= edge[::-1]
    return np.round(wave * _DBM0_PEAK * 10 ** (level_dbm0 / 20)).astype(np.int16)


def recording_notice_tone() -> NDArray[np.int16]:
    """The default announcement that a call is recorded: three short 1400 Hz beeps.

    1400 Hz is the recorder warning tone (Federal Standard 1037C, "recorder warning tone";
    US carriers repeat a 0.5 s burst every 15 s). Played once at the start of the call as
    three 200 ms beeps 200 ms apart, at -10 dBm0, 1 s in all.
    """
    beep = tone(1400.0, 0.2)
    gap = np.zeros(round(0.2 * RATE), dtype=np.int16)
    return np.concatenate([beep, gap, beep, gap, beep])


def load_prompt(path: Path | str) -> NDArray[np.int16]:
    """Read an operator's prompt: a mono 8 kHz audio file (WAV, FLAC, ...), as int16.

    Nothing is resampled or mixed down: telephone audio converted by a tool made for it sounds
    better than anything done here, so other files are refused with the command that fixes them.

    :raises PromptError: when the file is unreadable, not 8 kHz, or not mono.
    """
    try:
        samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, OSError) as exc:
        raise PromptError(f"{path}: cannot read the prompt: {exc}") from None
    channels = samples.shape[1]
    if rate != RATE or channels != 1:
        raise PromptError(
            f"{path}: a prompt must be mono at {RATE} Hz, this is {channels} channel(s) at "
            f"{rate} Hz; convert it with: sox '{path}' -r {RATE} -c 1 -b 16 prompt.wav"
        )
    result: NDArray[np.int16] = samples[:, 0].copy()
    return result


def packetize(
    audio: Sequence[int] | NDArray[np.int16],
    *,
    codec: Literal["PCMU", "PCMA"] = "PCMU",
    ssrc: int,
    sequence: int,
    timestamp: int,
) -> list[bytes]:
    """Cut mono 8 kHz int16 audio into 20 ms G.711 RTP packets, ready to send 20 ms apart.

    The last packet is filled up with silence, so every packet holds 160 samples and the
    timestamps advance evenly. The first packet has the marker bit set: it starts a talkspurt
    (RFC 3551 §4.1). Sequence numbers and timestamps wrap (RFC 3550 §5.1).

    :param codec: PCMU (payload type 0) or PCMA (8), as negotiated with the party.
    :param ssrc: the synchronisation source of the stream the prompt is played on.
    :param sequence: sequence number of the first packet.
    :param timestamp: timestamp of the first sample.
    """
    samples = np.asarray(audio, dtype=np.int16).reshape(-1)
    if codec == "PCMU":
        payload_type, encode = PAYLOAD_PCMU, ulaw_encode
    else:
        payload_type, encode = PAYLOAD_PCMA, alaw_encode
    padded = -len(samples) % SAMPLES_PER_PACKET
    encoded = encode(np.concatenate([samples, np.zeros(padded, dtype=np.int16)]))
    return [
        RtpPacket(
            payload_type=payload_type,
            sequence=(sequence + index) & 0xFFFF,
            timestamp=(timestamp + index * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=encoded[offset : offset + SAMPLES_PER_PACKET],
            marker=index == 0,
        ).to_bytes()
        for index, offset in enumerate(range(0, len(encoded), SAMPLES_PER_PACKET))
    ]
