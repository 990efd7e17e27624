"""Prompts played into a call: audio to 20 ms G.711 RTP packets, and the default notice.

There is no speech synthesis here. The default recording notice is the recorder warning tone
(:func:`recording_notice_tone`); operators who want words ("this call may be recorded") put
their own WAV file, mono at 8 kHz, in a prompts directory and name it in a dialplan: checked
at load by :func:`check_prompt` (the header only), read when played by :func:`load_prompt`
and kept by :class:`PromptCache` while the file is unchanged.
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import numpy as np
import soundfile
from numpy.typing import NDArray

from callrouter.media.g711 import RATE, alaw_encode, ulaw_encode
from callrouter.media.rtp import PAYLOAD_PCMA, PAYLOAD_PCMU, RtpPacket

__all__ = [
    "MAX_PROMPT_SECONDS",
    "PROMPT_NAME",
    "RECORDING_NOTICE",
    "PromptCache",
    "PromptError",
    "check_prompt",
    "load_prompt",
    "packetize",
    "prompt_path",
    "recording_notice_tone",
    "tone",
]

RECORDING_NOTICE: Final = "recording-notice"
"""The built-in prompt's name: :func:`recording_notice_tone`."""
PROMPT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""An operator prompt's name, the file ``<name>.wav`` in the prompts directory: no dot, slash
or backslash, so a name can never leave that directory (no ``..``, no absolute path)."""
MAX_PROMPT_SECONDS: Final = 60.0
"""Longest operator prompt: a notice, not hold music, and at most 960 KB of samples held by
each worker that plays it."""

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


def prompt_path(directory: Path, name: str) -> Path:
    """The file of operator prompt ``name``.

    :raises PromptError: ``name`` is not a :data:`PROMPT_NAME`.
    """
    if not PROMPT_NAME.fullmatch(name):
        raise PromptError(
            f"{name!r} is not a prompt name: 1 to 64 letters, digits, - and _, without .wav"
        )
    return directory / f"{name}.wav"


def _refuse_shape(path: Path | str, channels: int, rate: int, frames: int) -> None:
    """Nothing is resampled or mixed down: telephone audio converted by a tool made for it
    sounds better than anything done here, so other files are refused with the command that
    fixes them."""
    if rate != RATE or channels != 1:
        raise PromptError(
            f"{path}: a prompt must be mono at {RATE} Hz, this is {channels} channel(s) at "
            f"{rate} Hz; convert it with: sox '{path}' -r {RATE} -c 1 -b 16 prompt.wav"
        )
    if frames > MAX_PROMPT_SECONDS * RATE:
        raise PromptError(
            f"{path}: a prompt may last {MAX_PROMPT_SECONDS:g} s, this one {frames / RATE:.2f} s"
        )


def check_prompt(path: Path | str) -> float:
    """Check an operator's prompt file from its header, without reading the audio (dialplans
    are checked on the signalling process's loop); returns its length in seconds.

    :raises PromptError: the file is unreadable, not WAV, not mono at 8 kHz, or too long.
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, OSError) as exc:
        raise PromptError(f"{path}: cannot read the prompt: {exc}") from None
    if info.format != "WAV":
        raise PromptError(f"{path}: a prompt must be a WAV file, this is {info.format}")
    _refuse_shape(path, info.channels, info.samplerate, info.frames)
    return float(info.frames / RATE)


def load_prompt(path: Path | str) -> NDArray[np.int16]:
    """Read an operator's prompt: a mono 8 kHz audio file (WAV, FLAC, ...), as int16.

    :raises PromptError: when the file is unreadable, not 8 kHz, not mono, or longer than
        :data:`MAX_PROMPT_SECONDS`.
    """
    try:
        samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, OSError) as exc:
        raise PromptError(f"{path}: cannot read the prompt: {exc}") from None
    _refuse_shape(path, samples.shape[1], rate, samples.shape[0])
    result: NDArray[np.int16] = samples[:, 0].copy()
    return result


Stamp = tuple[int, int, int, int]
"""What tells a file's versions apart: device, inode, size, mtime in ns."""


class PromptCache:
    """Operator prompts read once and kept, by name, while their file is unchanged; the least
    recently played go first beyond ``size``.

    An edited file (another inode, size or mtime) is read again on its next play; the owner
    forgets a prompt whose file is gone or broken.

    :param directory: the prompts directory; names are :data:`PROMPT_NAME` files in it.
    :param size: prompts kept at most (each up to 960 KB).
    """

    def __init__(self, directory: Path, size: int = 16) -> None:
        self.directory = directory
        self.size = size
        self._kept: OrderedDict[str, tuple[Stamp, NDArray[np.int16]]] = OrderedDict()

    def stamp(self, name: str) -> tuple[Path, Stamp]:
        """The prompt's file and its stamp now.

        :raises PromptError: a bad name, or the file is gone or cannot be looked at.
        """
        path = prompt_path(self.directory, name)
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise PromptError(f"{path}: cannot read the prompt: {exc.strerror}") from None
        return path, (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def kept(self, name: str, stamp: Stamp) -> NDArray[np.int16] | None:
        """The audio read before, if the file is still the one it was read from."""
        entry = self._kept.get(name)
        if entry is None or entry[0] != stamp:
            return None
        self._kept.move_to_end(name)
        return entry[1]

    def keep(self, name: str, stamp: Stamp, audio: NDArray[np.int16]) -> None:
        self._kept[name] = (stamp, audio)
        self._kept.move_to_end(name)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def forget(self, name: str) -> None:
        self._kept.pop(name, None)


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
