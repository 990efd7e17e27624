"""RTP packets (RFC 3550 §5.1): parse the fixed header into a frozen dataclass, and build one.

Pure: bytes in, dataclass out, and back. The header, as RFC 3550 §5.1 draws it:

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "PAYLOAD_CN",
    "PAYLOAD_PCMA",
    "PAYLOAD_PCMU",
    "RTP_VERSION",
    "MalformedRtp",
    "RtpExtension",
    "RtpPacket",
    "parse_rtp",
]

# Static payload types of RFC 3551 §6, Table 4, that the media worker deals with.
PAYLOAD_PCMU: Final = 0
PAYLOAD_PCMA: Final = 8
PAYLOAD_CN: Final = 13  # comfort noise, RFC 3389

RTP_VERSION: Final = 2
_HEADER: Final = struct.Struct("!BBHII")
_EXTENSION_HEADER: Final = struct.Struct("!HH")


class MalformedRtp(ValueError):
    """The bytes are not a valid RTP packet; the message says which rule they break."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """A header extension (RFC 3550 §5.3.1)."""

    profile: int
    """16 bits defined by the profile (0xBEDE is RFC 8285's one-byte form)."""
    data: bytes
    """The extension body: a whole number of 32-bit words."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet: the fixed header fields, then the payload with any padding removed."""

    payload_type: int
    """PT, 7 bits: 0 PCMU, 8 PCMA, 13 CN; 96-127 dynamic (telephone-event is usually 101)."""
    sequence: int
    """16 bits, +1 per packet sent, wrapping (RFC 3550 §5.1)."""
    timestamp: int
    """32 bits, the sampling instant of the first octet in the media clock (8 kHz for G.711)."""
    ssrc: int
    """32 bits, the synchronisation source; a new one means a new stream."""
    payload: bytes = b""
    marker: bool = False
    """M bit; for audio, the first packet of a talkspurt (RFC 3551 §4.1)."""
    csrc: tuple[int, ...] = ()
    """Contributing sources, at most 15."""
    extension: RtpExtension | None = None
    padding: int = 0
    """Octets of padding, counting the final count octet; 0 for none (the P bit clear)."""

    def __post_init__(self) -> None:
        for name, value, bits in (
            ("payload_type", self.payload_type, 7),
            ("sequence", self.sequence, 16),
            ("timestamp", self.timestamp, 32),
            ("ssrc", self.ssrc, 32),
            ("padding", self.padding, 8),
        ):
            if not 0 <= value < 1 << bits:
                raise ValueError(f"RTP {name} {value} does not fit in {bits} bits")
        if len(self.csrc) > 15:
            raise ValueError(f"RTP carries at most 15 CSRCs, not {len(self.csrc)}")
        if any(not 0 <= csrc < 1 << 32 for csrc in self.csrc):
            raise ValueError("an RTP CSRC does not fit in 32 bits")
        if self.extension is not None:
            if not 0 <= self.extension.profile < 1 << 16:
                raise ValueError("RTP extension profile does not fit in 16 bits")
            if len(self.extension.data) % 4 or len(self.extension.data) >= 4 << 16:
                raise ValueError("RTP extension data must be whole 32-bit words, < 2**16 of them")

    def to_bytes(self) -> bytes:
        """The packet on the wire; padding octets are zero except the final count."""
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        parts += [struct.pack("!I", csrc) for csrc in self.csrc]
        if self.extension is not None:
            data = self.extension.data
            parts += [_EXTENSION_HEADER.pack(self.extension.profile, len(data) // 4), data]
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet.

    :param data: a whole UDP payload.
    :raises MalformedRtp: when the packet is too short for what its header announces, is not
        version 2, or its padding count is impossible.
    """
    if len(data) < _HEADER.size:
        raise MalformedRtp(f"RTP packet of {len(data)} octets is shorter than the 12-octet header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise MalformedRtp(f"RTP version {first >> 6}, expected 2")
    offset = _HEADER.size
    csrc_count = first & 0x0F
    if len(data) < offset + 4 * csrc_count:
        raise MalformedRtp(f"RTP packet too short for its {csrc_count} CSRCs")
    csrc = struct.unpack_from(f"!{csrc_count}I", data, offset)
    offset += 4 * csrc_count
    extension = None
    if first & 0x10:
        # RFC 3550 §5.3.1: 16 bits profile-defined, 16 bits length in 32-bit words (excluding
        # this 4-octet header), then the data.
        if len(data) < offset + _EXTENSION_HEADER.size:
            raise MalformedRtp("RTP packet too short for its header extension")
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        offset += _EXTENSION_HEADER.size
        if len(data) < offset + 4 * words:
            raise MalformedRtp(f"RTP header extension of {words} words overruns the packet")
        extension = RtpExtension(profile, data[offset : offset + 4 * words])
        offset += 4 * words
    end = len(data)
    padding = 0
    if first & 0x20:
        # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
        padding = data[-1]
        if padding == 0 or padding > end - offset:
            raise MalformedRtp(f"RTP padding count {padding} is impossible here")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=data[offset:end],
        marker=bool(second & 0x80),
        csrc=csrc,
        extension=extension,
        padding=padding,
    )
