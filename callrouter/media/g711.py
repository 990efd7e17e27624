"""G.711 companding: µ-law (PCMU, RTP payload type 0) and A-law (PCMA, payload type 8).

Linear samples are int16 with the companded value left-justified, as ITU-T G.191's reference
software (the STL ``g711.c``) does: A-law uses the 13 most significant bits, µ-law the 14. The
encoders quantise negative samples by their one's complement (``~x``), like G.191, so the
quantiser is symmetric around -0.5 and ``encode(~x) == encode(x) ^ 0x80``.

Two implementations of the same four functions:

- the numpy one (``ulaw_decode`` ...), used on the hot path: decoding is one lookup in a
  256-entry table, encoding one lookup in a 65,536-entry table, both computed once at import by
  vectorised versions of the G.711 rules;
- a pure-Python reference (``ulaw_decode_py`` ...), one sample at a time, written as plainly
  as the G.191 code it follows. The tests run one suite over both and check they agree on every
  code and every int16 value.
"""

from __future__ import annotations

from typing import Final, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ALAW_TO_LINEAR",
    "RATE",
    "ULAW_TO_LINEAR",
    "alaw_decode",
    "alaw_decode_py",
    "alaw_encode",
    "alaw_encode_py",
    "ulaw_decode",
    "ulaw_decode_py",
    "ulaw_encode",
    "ulaw_encode_py",
]

RATE: Final = 8000
"""Samples per second: G.711's sampling rate, and the RTP clock rate of PCMU/PCMA (RFC 3551)."""

# Table 2a/G.711 (µ-law): the encoder works on 14-bit magnitudes offset by 33 (the difference
# between the µ-law and A-law decision values), limited to 8191.
_ULAW_BIAS: Final = 33
_ULAW_CLIP: Final = 0x1FFF
# Table 1a/G.711 (A-law): the even bits of the code word are inverted on the line.
_ALAW_TOGGLE: Final = 0x55

_Code = TypeVar("_Code", np.int16, np.uint8)


# ---- numpy: tables built once, then one lookup per sample ---------------------------------


def _ulaw_expand_table() -> NDArray[np.int16]:
    # Table 2a/G.711: bit 7 is the sign (1 = positive); the 3-bit segment and 4-bit step that
    # follow are sent inverted. The decoded value is the middle of the quantisation interval.
    code = np.arange(256, dtype=np.int32)
    inverted = ~code & 0x7F
    exponent = inverted >> 4
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * _ULAW_BIAS
    return np.where(code >= 0x80, magnitude, -magnitude).astype(np.int16)


def _alaw_expand_table() -> NDArray[np.int16]:
    # Table 1a/G.711: sign bit 1 = positive; segment 0 and 1 have the same step, each further
    # segment doubles it; the value is the middle of the interval (the +8).
    code = np.arange(256, dtype=np.int32)
    toggled = (code ^ _ALAW_TOGGLE) & 0x7F
    exponent = toggled >> 4
    mantissa = np.where(exponent > 0, toggled & 0x0F | 0x10, toggled & 0x0F)
    magnitude: NDArray[np.int32] = ((mantissa << 4) + 8) << np.maximum(exponent - 1, 0)
    return np.where(code >= 0x80, magnitude, -magnitude).astype(np.int16)


def _bit_length(values: NDArray[np.int32]) -> NDArray[np.int32]:
    """``int.bit_length`` for non-negative values below 2**15."""
    thresholds = 1 << np.arange(15, dtype=np.int32)
    return np.searchsorted(thresholds, values, side="right").astype(np.int32)


def _ulaw_compress_table() -> NDArray[np.uint8]:
    linear = np.arange(-32768, 32768, dtype=np.int32)
    magnitude = np.minimum(np.where(linear < 0, ~linear, linear) >> 2, _ULAW_CLIP - _ULAW_BIAS)
    absno = magnitude + _ULAW_BIAS
    segment = _bit_length(absno >> 6) + 1
    code = ((8 - segment) << 4) | (0x0F - ((absno >> segment) & 0x0F))
    code = np.where(linear >= 0, code | 0x80, code)
    return _by_uint16(code)


def _alaw_compress_table() -> NDArray[np.uint8]:
    linear = np.arange(-32768, 32768, dtype=np.int32)
    ix = np.where(linear < 0, ~linear, linear) >> 4  # 12-bit magnitude, 0..2047
    exponent = np.maximum(_bit_length(ix) - 4, 0)  # segment: where the leading 1 is
    mantissa = np.where(exponent > 0, (ix >> np.maximum(exponent - 1, 0)) - 16, ix)
    code = (exponent << 4) + mantissa
    code = np.where(linear >= 0, code | 0x80, code) ^ _ALAW_TOGGLE
    return _by_uint16(code)


def _by_uint16(codes: NDArray[np.int32]) -> NDArray[np.uint8]:
    """Reorder a table indexed from -32768 so it is indexed by the sample's uint16 view."""
    return np.roll(codes.astype(np.uint8), -32768)


def _read_only(table: NDArray[_Code]) -> NDArray[_Code]:
    table.flags.writeable = False
    return table


ULAW_TO_LINEAR: Final = _read_only(_ulaw_expand_table())
"""µ-law code (0..255) → linear int16 sample."""
ALAW_TO_LINEAR: Final = _read_only(_alaw_expand_table())
"""A-law code (0..255) → linear int16 sample."""
_LINEAR_TO_ULAW: Final = _read_only(_ulaw_compress_table())
_LINEAR_TO_ALAW: Final = _read_only(_alaw_compress_table())


def _samples(samples: ArrayLike) -> NDArray[np.uint16]:
    array = np.asarray(samples)
    if array.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, not {array.dtype}")
    return array.reshape(-1).view(np.uint16)


def ulaw_decode(data: bytes) -> NDArray[np.int16]:
    """Decode µ-law bytes (a PCMU payload) into int16 samples.

    :param data: one code per byte.
    """
    return ULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> NDArray[np.int16]:
    """Decode A-law bytes (a PCMA payload) into int16 samples.

    :param data: one code per byte.
    """
    return ALAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: ArrayLike) -> bytes:
    """Encode int16 samples as µ-law bytes.

    :param samples: an int16 array (any shape; flattened in C order).
    :raises TypeError: for any other dtype (scaling floats is the caller's decision).
    """
    return _LINEAR_TO_ULAW[_samples(samples)].tobytes()


def alaw_encode(samples: ArrayLike) -> bytes:
    """Encode int16 samples as A-law bytes.

    :param samples: an int16 array (any shape; flattened in C order).
    :raises TypeError: for any other dtype.
    """
    return _LINEAR_TO_ALAW[_samples(samples)].tobytes()


# ---- pure-Python reference: G.191 g711.c, one sample at a time ----------------------------


def _ulaw_expand_one(code: int) -> int:
    sign = 1 if code >= 0x80 else -1
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * _ULAW_BIAS)


def _alaw_expand_one(code: int) -> int:
    ix = (code ^ _ALAW_TOGGLE) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    if exponent > 0:
        mantissa += 16  # the leading 1 the encoder removed
    mantissa = (mantissa << 4) + 8  # half a quantisation step
    if exponent > 1:
        mantissa <<= exponent - 1
    return mantissa if code >= 0x80 else -mantissa


def _ulaw_compress_one(linear: int) -> int:
    absno = ((~linear if linear < 0 else linear) >> 2) + _ULAW_BIAS
    absno = min(absno, _ULAW_CLIP)
    segment = 1
    i = absno >> 6
    while i:
        segment += 1
        i >>= 1
    code = ((8 - segment) << 4) | (0x0F - ((absno >> segment) & 0x0F))
    return code | 0x80 if linear >= 0 else code


def _alaw_compress_one(linear: int) -> int:
    ix = (~linear if linear < 0 else linear) >> 4
    if ix > 15:
        exponent = 1
        while ix > 16 + 15:
            ix >>= 1
            exponent += 1
        ix = ix - 16 + (exponent << 4)
    if linear >= 0:
        ix |= 0x80
    return ix ^ _ALAW_TOGGLE


def ulaw_decode_py(data: bytes) -> NDArray[np.int16]:
    """Reference for :func:`ulaw_decode`."""
    return np.array([_ulaw_expand_one(code) for code in data], dtype=np.int16)


def alaw_decode_py(data: bytes) -> NDArray[np.int16]:
    """Reference for :func:`alaw_decode`."""
    return np.array([_alaw_expand_one(code) for code in data], dtype=np.int16)


def ulaw_encode_py(samples: ArrayLike) -> bytes:
    """Reference for :func:`ulaw_encode`."""
    return bytes(_ulaw_compress_one(int(x)) for x in _samples(samples).view(np.int16))


def alaw_encode_py(samples: ArrayLike) -> bytes:
    """Reference for :func:`alaw_encode`."""
    return bytes(_alaw_compress_one(int(x)) for x in _samples(samples).view(np.int16))
