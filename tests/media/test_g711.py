"""G.711: one suite over the numpy tables and the pure-Python reference (STYLE 15)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from callrouter.media import g711

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


@dataclass(frozen=True)
class Law:
    name: str
    decode: Callable[[bytes], NDArray[np.int16]]
    encode: Callable[[Any], bytes]
    silence: int  # the code for 0 (µ-law: 0xFF; A-law: 0xD5, i.e. 0x80 toggled)
    quietest: int  # what it decodes to: A-law has no zero level, its smallest is ±8
    negative_zero: int | None  # µ-law has a second code that decodes to 0
    full_scale: int


def laws(implementation: str) -> list[Law]:
    py = "_py" if implementation == "python" else ""
    return [
        Law("ulaw", getattr(g711, "ulaw_decode" + py), getattr(g711, "ulaw_encode" + py),
            0xFF, 0, 0x7F, 32124),
        Law("alaw", getattr(g711, "alaw_decode" + py), getattr(g711, "alaw_encode" + py),
            0xD5, 8, None, 32256),
    ]  # fmt: skip


@pytest.fixture(
    params=[(impl, index) for impl in ("numpy", "python") for index in (0, 1)],
    ids=lambda p: f"{p[0]}-{('ulaw', 'alaw')[p[1]]}",
)
def law(request: pytest.FixtureRequest) -> Law:
    implementation: str = request.param[0]
    index: int = request.param[1]
    return laws(implementation)[index]


# ---- the suite, run over both implementations and both laws ---------------------------------


def test_known_codes(law: Law) -> None:
    decoded = law.decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert decoded[law.silence] == law.quietest
    assert decoded[law.silence ^ 0x80] == -law.quietest
    assert decoded.max() == law.full_scale
    assert decoded.min() == -law.full_scale
    assert law.encode(np.zeros(3, dtype=np.int16)) == bytes([law.silence]) * 3


def test_every_code_survives_decode_then_encode(law: Law) -> None:
    expected = bytearray(ALL_CODES)
    if law.negative_zero is not None:
        expected[law.negative_zero] = law.silence  # -0 and +0 are the same sample
    assert law.encode(law.decode(ALL_CODES)) == bytes(expected)


def test_decoded_values_are_ordered_by_magnitude(law: Law) -> None:
    decoded = law.decode(ALL_CODES).astype(np.int32)
    positive = np.sort(decoded[decoded > 0])
    assert len(np.unique(positive)) == 128 - (law.negative_zero is not None)
    assert sorted(-decoded[decoded < 0]) == list(positive)  # symmetric


def test_encoding_is_monotonic_and_picks_the_nearest_level(law: Law) -> None:
    codes = law.encode(ALL_INT16)
    levels = law.decode(codes).astype(np.int32)
    assert np.all(np.diff(levels) >= 0)
    # Each sample lands on a neighbouring level: less than one quantisation step away.
    table = np.unique(law.decode(ALL_CODES).astype(np.int32))
    steps = np.diff(table)
    index = np.clip(np.searchsorted(table, levels), 1, len(steps))
    linear = ALL_INT16.astype(np.int32)
    error = np.abs(linear - levels)
    inside = np.abs(linear) <= law.full_scale
    assert np.all(error[inside] < steps[index[inside] - 1])


def test_one_s_complement_symmetry_of_g191(law: Law) -> None:
    positive = ALL_INT16[ALL_INT16 >= 0]
    flipped = np.frombuffer(law.encode(~positive), dtype=np.uint8)
    assert np.array_equal(flipped ^ 0x80, np.frombuffer(law.encode(positive), dtype=np.uint8))


@given(st.lists(st.integers(-32768, 32767), max_size=50))
def test_any_shape_and_length(samples: list[int]) -> None:
    array = np.array(samples, dtype=np.int16)
    for law in laws("numpy") + laws("python"):
        assert len(law.encode(array)) == len(samples)
        assert law.encode(array.reshape(-1, 1)) == law.encode(array)


def test_refuses_samples_that_are_not_int16(law: Law) -> None:
    with pytest.raises(TypeError, match="int16"):
        law.encode(np.zeros(4, dtype=np.float32))


# ---- the two implementations agree, and match an independent third ------------------------


@pytest.mark.parametrize("index", [0, 1], ids=["ulaw", "alaw"])
def test_numpy_and_python_agree_on_every_code_and_every_int16(index: int) -> None:
    fast, reference = laws("numpy")[index], laws("python")[index]
    assert np.array_equal(fast.decode(ALL_CODES), reference.decode(ALL_CODES))
    assert fast.encode(ALL_INT16) == reference.encode(ALL_INT16)


def test_tables_match_cpythons_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    assert g711.ULAW_TO_LINEAR.tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.ALAW_TO_LINEAR.tobytes() == audioop.alaw2lin(ALL_CODES, 2)
    assert g711.alaw_encode(ALL_INT16) == audioop.lin2alaw(ALL_INT16.tobytes(), 2)
    # audioop's µ-law encoder negates in two's complement where G.191 takes the one's
    # complement, so they differ by one level on some negative samples: compare the rest.
    positive = ALL_INT16[ALL_INT16 >= 0]
    assert g711.ulaw_encode(positive) == audioop.lin2ulaw(positive.tobytes(), 2)


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        g711.ULAW_TO_LINEAR[0] = 1
