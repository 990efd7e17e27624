"""A raw stream kept as a recording's final file (the disk had no room to encode it) is
downloaded as a WAV file: a header made up front, then the samples as stored, range by range."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import soundfile

from callrouter.media.recording import WAV_HEADER_BYTES
from callrouter.recordings import WavOfRaw
from callrouter.vault import Vault


def test_a_kept_raw_stream_reads_as_a_wav_file_in_any_range(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 64)
    recording = uuid.uuid4()
    vault.create_key(recording)
    rng = np.random.default_rng(7)
    samples = rng.integers(-32768, 32767, size=(1000, 2), dtype=np.int16)
    with vault.writer(recording, tmp_path / f"{recording}.pcm") as out:
        out.write(samples.tobytes())

    wav = WavOfRaw(vault.reader(recording, tmp_path / f"{recording}.pcm"))
    try:
        assert wav.plaintext_size == WAV_HEADER_BYTES + samples.nbytes
        whole = wav.read_range(0, wav.plaintext_size)
        for start, end in [(0, 10), (40, 50), (44, 45), (43, 300), (1000, 4044), (3990, 9999)]:
            assert wav.read_range(start, end) == whole[start:end], (start, end)
    finally:
        wav.close()

    audio, rate = soundfile.read(io.BytesIO(whole), dtype="int16")
    assert rate == 8000 and np.array_equal(audio, samples)
