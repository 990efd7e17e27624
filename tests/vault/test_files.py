"""Recording files: round trips, range reads, and every way a file can be wrong."""

from __future__ import annotations

import itertools
import shutil
import uuid
from pathlib import Path

import pytest

from callrouter.vault import (
    NoDataKey,
    NotARecordingFile,
    TamperedSegment,
    TruncatedFile,
    UnfinishedFileExists,
    Vault,
    VaultError,
    WrongRecording,
    part_path_of,
)
from callrouter.vault.stream import HEADER_SIZE, MAGIC, TAG_BYTES
from tests.vault.conftest import SEGMENT, read, write

SEALED = SEGMENT + TAG_BYTES


def pattern(size: int) -> bytes:
    """Bytes that differ from segment to segment, so a swap or a wrong slice shows."""
    return bytes((i * 7 + i // SEGMENT) % 251 for i in range(size))


@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 5 * SEGMENT + 17]
)
def test_round_trip(vault: Vault, recording_id: uuid.UUID, recordings: Path, size: int) -> None:
    path = recordings / "call.raw"
    data = pattern(size)
    write(vault, recording_id, path, data)
    with vault.reader(recording_id, path) as source:
        assert source.plaintext_size == size
        assert source.segment_count == size // SEGMENT + 1
        assert source.read_all() == data
    assert path.stat().st_size == HEADER_SIZE + size + (size // SEGMENT + 1) * TAG_BYTES
    assert not part_path_of(path).exists()


def test_writes_of_any_size_make_the_same_plaintext(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    data = pattern(10 * SEGMENT + 3)
    path = recordings / "call.raw"
    sizes = itertools.cycle([1, 0, 63, 64, 65, 200, 2])
    with vault.writer(recording_id, path) as out:
        start = 0
        while start < len(data):
            step = next(sizes)
            out.write(memoryview(data)[start : start + step])
            start += step
        assert out.plaintext_bytes == len(data)
    assert read(vault, recording_id, path) == data


def test_range_reads_at_segment_boundaries(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    data = pattern(4 * SEGMENT + 10)
    path = recordings / "call.raw"
    write(vault, recording_id, path, data)
    edges = sorted({0, 1, len(data) - 1, len(data), *range(SEGMENT - 1, len(data), SEGMENT)})
    edges += [e + 1 for e in edges]
    with vault.reader(recording_id, path) as source:
        for start in edges:
            for end in edges:
                if start <= end:
                    assert source.read_range(start, end) == data[start:end], (start, end)
        assert source.read_range(len(data) + 5, len(data) + 9) == b""
        with pytest.raises(ValueError, match="byte range 5-4"):
            source.read_range(5, 4)
        with pytest.raises(ValueError, match="byte range -1-4"):
            source.read_range(-1, 4)


def test_a_flipped_byte_anywhere_fails_with_a_clear_error(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    write(vault, recording_id, path, pattern(3 * SEGMENT + 5))
    original = path.read_bytes()
    tampered = recordings / "tampered.raw"
    for position in range(len(original)):
        changed = bytearray(original)
        changed[position] ^= 0x01
        tampered.write_bytes(changed)
        with pytest.raises(VaultError) as failure:
            read(vault, recording_id, tampered)
        message = str(failure.value)
        if position < len(MAGIC):
            assert message == f"{tampered}: not a callrouter recording file (bad magic)"
        elif position == len(MAGIC):
            assert "format version" in message
        elif position < len(MAGIC) + 1 + 16:
            assert isinstance(failure.value, WrongRecording)
        elif position < len(MAGIC) + 1 + 32:
            assert isinstance(failure.value, NoDataKey)
            assert "sealed with data key" in message
        else:
            # Nonce prefix, segment size, ciphertext, tag: authentication or layout says no.
            assert isinstance(failure.value, TamperedSegment | TruncatedFile | NotARecordingFile)
            assert (
                "failed authentication" in message
                or "truncated" in message
                or ("segment size" in message)
            )


def test_exact_error_for_a_tampered_segment(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    write(vault, recording_id, path, pattern(5 * SEGMENT))
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 3 * SEALED + 10] ^= 0x80
    path.write_bytes(data)
    with vault.reader(recording_id, path) as source:
        assert source.read_range(0, 3 * SEGMENT) == pattern(3 * SEGMENT)
        with pytest.raises(TamperedSegment) as failure:
            source.read_all()
    assert str(failure.value) == (
        f"recording {recording_id}: segment 3 failed authentication (tampered or reordered)"
    )


def test_truncated_files_fail(vault: Vault, recording_id: uuid.UUID, recordings: Path) -> None:
    path = recordings / "call.raw"
    write(vault, recording_id, path, pattern(6 * SEGMENT + 20))
    whole = path.read_bytes()
    cut = recordings / "cut.raw"

    # Cut at a segment boundary: every remaining segment is genuine, the final flag is missing.
    cut.write_bytes(whole[: HEADER_SIZE + 6 * SEALED])
    with pytest.raises(TruncatedFile) as failure:
        vault.reader(recording_id, cut)
    assert str(failure.value) == (
        f"recording {recording_id}: truncated after segment 5 (no final segment)"
    )

    for length in (HEADER_SIZE, HEADER_SIZE + 5, HEADER_SIZE + 3 * SEALED + 40, len(whole) - 1):
        cut.write_bytes(whole[:length])
        with pytest.raises((TruncatedFile, TamperedSegment)):
            read(vault, recording_id, cut)

    cut.write_bytes(whole[: HEADER_SIZE - 1])
    with pytest.raises(NotARecordingFile, match="header cut short"):
        vault.reader(recording_id, cut)


def test_swapped_segments_fail(vault: Vault, recording_id: uuid.UUID, recordings: Path) -> None:
    path = recordings / "call.raw"
    write(vault, recording_id, path, pattern(4 * SEGMENT + 1))
    data = path.read_bytes()
    one = slice(HEADER_SIZE + SEALED, HEADER_SIZE + 2 * SEALED)
    two = slice(HEADER_SIZE + 2 * SEALED, HEADER_SIZE + 3 * SEALED)
    swapped = bytearray(data)
    swapped[one], swapped[two] = data[two], data[one]
    path.write_bytes(swapped)
    with pytest.raises(TamperedSegment, match="segment 1 failed authentication"):
        read(vault, recording_id, path)


def test_segments_of_another_file_of_the_same_recording_fail(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    """Same data key, different nonce prefix: a segment cannot move between files."""
    first, second = recordings / "call.raw", recordings / "call.flac"
    write(vault, recording_id, first, pattern(3 * SEGMENT))
    write(vault, recording_id, second, pattern(3 * SEGMENT))
    spliced = bytearray(first.read_bytes())
    spliced[HEADER_SIZE : HEADER_SIZE + SEALED] = second.read_bytes()[
        HEADER_SIZE : HEADER_SIZE + SEALED
    ]
    first.write_bytes(spliced)
    with pytest.raises(TamperedSegment, match="segment 0 failed"):
        read(vault, recording_id, first)


def test_a_file_renamed_to_another_recording_fails(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    other = uuid.uuid4()
    vault.create_key(other)
    write(vault, recording_id, recordings / f"{recording_id}.raw", pattern(100))
    renamed = recordings / f"{other}.raw"
    (recordings / f"{recording_id}.raw").rename(renamed)
    with pytest.raises(WrongRecording) as failure:
        vault.reader(other, renamed)
    assert str(failure.value) == (
        f"{renamed}: file belongs to recording {recording_id}, not {other}"
    )


def test_not_a_recording_file(vault: Vault, recording_id: uuid.UUID, recordings: Path) -> None:
    path = recordings / "plain.wav"
    path.write_bytes(b"RIFF" + bytes(200))
    with pytest.raises(NotARecordingFile) as failure:
        vault.reader(recording_id, path)
    assert str(failure.value) == f"{path}: not a callrouter recording file (bad magic)"


def test_after_shred_every_copy_is_unreadable(
    vault: Vault, recording_id: uuid.UUID, recordings: Path, tmp_path: Path
) -> None:
    path = recordings / "call.flac"
    write(vault, recording_id, path, pattern(300))
    backup = tmp_path / "backup.flac"
    shutil.copy(path, backup)
    assert vault.shred(recording_id) is True
    assert vault.shred(recording_id) is False
    assert list((tmp_path / "keys").glob(f"*{recording_id}*")) == []
    for copy in (path, backup):
        with pytest.raises(NoDataKey) as failure:
            vault.reader(recording_id, copy)
        assert str(failure.value) == (
            f"recording {recording_id}: no data key (shredded or never created)"
        )
    with pytest.raises(NoDataKey):
        vault.writer(recording_id, recordings / "more.raw")

    # A new key for the same recording does not open the old files either.
    vault.create_key(recording_id)
    with pytest.raises(NoDataKey, match="sealed with data key"):
        vault.reader(recording_id, backup)


def test_create_key_keeps_an_existing_key(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    write(vault, recording_id, path, pattern(100))
    vault.create_key(recording_id)
    assert read(vault, recording_id, path) == pattern(100)


def test_the_raw_stream_and_the_flac_share_the_key_not_the_nonces(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    raw, flac = recordings / "call.raw", recordings / "call.flac"
    write(vault, recording_id, raw, pattern(200))
    write(vault, recording_id, flac, pattern(200))
    assert read(vault, recording_id, raw) == read(vault, recording_id, flac) == pattern(200)
    # Same key id, different nonce prefix: the same plaintext seals differently.
    raw_bytes, flac_bytes = raw.read_bytes(), flac.read_bytes()
    assert raw_bytes[: HEADER_SIZE - 11] == flac_bytes[: HEADER_SIZE - 11]
    assert (
        raw_bytes[HEADER_SIZE - 11 : HEADER_SIZE - 4]
        != flac_bytes[HEADER_SIZE - 11 : HEADER_SIZE - 4]
    )
    assert raw_bytes[HEADER_SIZE:] != flac_bytes[HEADER_SIZE:]


def test_the_file_appears_only_when_closed_and_abort_leaves_nothing(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    out = vault.writer(recording_id, path)
    out.write(pattern(3 * SEGMENT + 1))
    out.flush()
    assert not path.exists()
    assert part_path_of(path).stat().st_size == HEADER_SIZE + 3 * SEALED
    assert part_path_of(path).stat().st_mode & 0o777 == 0o600
    assert out.close() == 3 * SEGMENT + 1
    with pytest.raises(ValueError, match="closed"):
        out.write(b"x")

    aborted = recordings / "aborted.raw"
    with pytest.raises(RuntimeError), vault.writer(recording_id, aborted) as failing:
        failing.write(pattern(500))
        raise RuntimeError("the call dropped")
    assert list(recordings.iterdir()) == [path]


def test_a_leftover_part_file_is_not_overwritten(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    part_path_of(path).write_bytes(b"what a crash left")
    with pytest.raises(UnfinishedFileExists, match=r"call\.raw\.part: an interrupted write"):
        vault.writer(recording_id, path)
    assert part_path_of(path).read_bytes() == b"what a crash left"


def crashed_part(vault: Vault, recording_id: uuid.UUID, path: Path, data: bytes, cut: int) -> Path:
    """The .part file a crash leaves: what was flushed, cut to ``cut`` bytes."""
    out = vault.writer(recording_id, path)
    out.write(data)
    out.flush()
    written = part_path_of(path).read_bytes()
    out.abort()
    part_path_of(path).write_bytes(written[:cut])
    return part_path_of(path)


@pytest.mark.parametrize("into_segment", [1, SEGMENT // 2, SEALED - 1])
def test_recover_keeps_exactly_the_complete_segments(
    vault: Vault, recording_id: uuid.UUID, recordings: Path, into_segment: int
) -> None:
    path = recordings / "call.raw"
    data = pattern(6 * SEGMENT + 30)
    part = crashed_part(vault, recording_id, path, data, HEADER_SIZE + 4 * SEALED + into_segment)
    assert vault.recover(recording_id, part, path) == 4 * SEGMENT
    assert not part.exists()
    with vault.reader(recording_id, path) as source:
        assert source.plaintext_size == 4 * SEGMENT
        assert source.read_all() == data[: 4 * SEGMENT]


def test_recover_at_a_segment_boundary_and_with_a_torn_segment(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    data = pattern(5 * SEGMENT)
    part = crashed_part(vault, recording_id, path, data, HEADER_SIZE + 3 * SEALED)
    assert vault.recover(recording_id, part, path) == 3 * SEGMENT
    assert read(vault, recording_id, path) == data[: 3 * SEGMENT]

    # A crash can leave a segment's length on disk with zeros where its bytes should be.
    path.unlink()
    part = crashed_part(vault, recording_id, path, data, HEADER_SIZE + 5 * SEALED)
    torn = bytearray(part.read_bytes())
    torn[HEADER_SIZE + 2 * SEALED :] = bytes(3 * SEALED)
    part.write_bytes(torn)
    assert vault.recover(recording_id, part, path) == 2 * SEGMENT
    assert read(vault, recording_id, path) == data[: 2 * SEGMENT]


def test_recover_with_nothing_to_keep(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    for cut in (0, 5, HEADER_SIZE, HEADER_SIZE + 10):
        part = crashed_part(vault, recording_id, path, pattern(3 * SEGMENT), cut)
        assert vault.recover(recording_id, part, path) == 0
        with vault.reader(recording_id, path) as source:
            assert source.plaintext_size == 0
            assert source.read_all() == b""
        path.unlink()


def test_recover_keeps_a_file_that_was_finished_but_not_renamed(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    path = recordings / "call.raw"
    for size in (0, SEGMENT, 3 * SEGMENT + 7):
        write(vault, recording_id, path, pattern(size))
        finished = path.read_bytes()
        path.rename(part_path_of(path))
        assert vault.recover(recording_id, part_path_of(path), path) == size
        assert path.read_bytes() == finished


def test_recover_refuses_another_recordings_part_file(
    vault: Vault, recording_id: uuid.UUID, recordings: Path
) -> None:
    other = uuid.uuid4()
    vault.create_key(other)
    path = recordings / "call.raw"
    part = crashed_part(vault, other, path, pattern(300), HEADER_SIZE + 2 * SEALED)
    with pytest.raises(WrongRecording):
        vault.recover(recording_id, part, path)
    assert part.exists() and not path.exists()


def test_no_plaintext_reaches_the_disk(
    vault: Vault, recording_id: uuid.UUID, recordings: Path, tmp_path: Path
) -> None:
    marker = b"CALLER-SAYS-HELLO-"
    audio = b"RIFF" + marker * 400
    path = recordings / "call.raw"

    def assert_nowhere() -> None:
        for file in tmp_path.rglob("*"):
            if file.is_file():
                content = file.read_bytes()
                assert b"RIFF" not in content, file
                assert marker[:8] not in content, file

    with vault.writer(recording_id, path) as out:
        for start in range(0, len(audio), 333):
            out.write(audio[start : start + 333])
            out.flush()
            assert_nowhere()
    assert_nowhere()
    assert read(vault, recording_id, path) == audio
