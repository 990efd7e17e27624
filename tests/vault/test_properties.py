"""Property tests: any data, any segment size, any way of writing it, any range read."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrouter.vault import Vault
from callrouter.vault.stream import Header, StreamSealer

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vault, Path]]:
    """One key ring and key store for all examples (hypothesis runs many per test)."""
    root = tmp_path_factory.mktemp("vault-properties")
    vault = Vault.open(root / "keyring.json", root / "keys")
    recordings = root / "recordings"
    recordings.mkdir()
    yield vault, recordings


@st.composite
def writes(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Some data, and the sizes of the pieces it is written in."""
    data = draw(st.binary(max_size=3000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [b - a for a, b in itertools.pairwise(bounds)]


@given(
    written=writes(),
    segment_bytes=st.integers(1, 300),
    ranges=st.lists(st.tuples(st.integers(0, 3200), st.integers(0, 3200)), max_size=8),
)
def test_round_trip_and_range_reads(
    shared: tuple[Vault, Path],
    written: tuple[bytes, list[int]],
    segment_bytes: int,
    ranges: list[tuple[int, int]],
) -> None:
    base, recordings = shared
    vault = Vault(base.key_ring, base.key_store, segment_bytes)
    data, pieces = written
    recording_id = uuid.uuid4()
    vault.create_key(recording_id)
    path = recordings / f"{recording_id}.raw"
    with vault.writer(recording_id, path) as out:
        start = 0
        for piece in pieces:
            out.write(data[start : start + piece])
            start += piece
    with vault.reader(recording_id, path) as source:
        assert source.plaintext_size == len(data)
        assert source.read_all() == data
        for a, b in ranges:
            start, end = min(a, b), max(a, b)
            assert source.read_range(start, end) == data[start:end]
    path.unlink()
    vault.shred(recording_id)


@given(written=writes(), segment_bytes=st.integers(1, 300))
def test_how_the_plaintext_is_split_does_not_change_the_file(
    written: tuple[bytes, list[int]], segment_bytes: int
) -> None:
    data, pieces = written
    header = Header(uuid.UUID(int=7), bytes(16), os.urandom(7), segment_bytes)
    at_once = StreamSealer(KEY, header)
    whole = at_once.update(data) + at_once.finish()
    in_pieces = StreamSealer(KEY, header)
    out, start = [], 0
    for piece in pieces:
        out.append(in_pieces.update(data[start : start + piece]))
        start += piece
    assert b"".join(out) + in_pieces.finish() == whole
