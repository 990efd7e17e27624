"""RTP header parse and build (RFC 3550 §5.1): one table drives both directions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrouter.media.rtp import MalformedRtp, RtpExtension, RtpPacket, parse_rtp

# (wire bytes, packet): parsed must equal the packet, the packet must build the same bytes.
VECTORS = [
    pytest.param(
        bytes.fromhex("80 00 1234 00000064 deadbeef") + b"\xff" * 160,
        RtpPacket(0, 0x1234, 100, 0xDEADBEEF, b"\xff" * 160),
        id="pcmu",
    ),
    pytest.param(
        bytes.fromhex("80 88 ffff ffffffff 00000001 d5d5"),
        RtpPacket(8, 0xFFFF, 0xFFFFFFFF, 1, b"\xd5\xd5", marker=True),
        id="pcma-marker-max-counters",
    ),
    pytest.param(
        # RFC 4733 telephone-event on PT 101: event 5, end bit, volume 10, duration 800.
        bytes.fromhex("80 65 0001 00000a00 00000002 058a0320"),
        RtpPacket(101, 1, 0xA00, 2, bytes.fromhex("058a0320")),
        id="telephone-event",
    ),
    pytest.param(
        bytes.fromhex("82 00 0001 00000000 00000003 00000011 00000022 7f"),
        RtpPacket(0, 1, 0, 3, b"\x7f", csrc=(0x11, 0x22)),
        id="two-csrcs",
    ),
    pytest.param(
        bytes.fromhex("90 00 0001 00000000 00000004 bede0001 10ab0000 ff"),
        RtpPacket(0, 1, 0, 4, b"\xff", extension=RtpExtension(0xBEDE, bytes.fromhex("10ab0000"))),
        id="one-byte-header-extension",
    ),
    pytest.param(
        bytes.fromhex("90 00 0001 00000000 00000004 10000000"),
        RtpPacket(0, 1, 0, 4, b"", extension=RtpExtension(0x1000, b"")),
        id="empty-extension-no-payload",
    ),
    pytest.param(
        bytes.fromhex("a0 00 0001 00000000 00000005 ffff 000003"),
        RtpPacket(0, 1, 0, 5, b"\xff\xff", padding=3),
        id="padding",
    ),
    pytest.param(
        bytes.fromhex("b1 0d 0001 00000000 00000006 00000007 abcd0000 01 0002"),
        RtpPacket(13, 1, 0, 6, b"\x01", csrc=(7,), extension=RtpExtension(0xABCD, b""), padding=2),
        id="comfort-noise-with-everything",
    ),
]


@pytest.mark.parametrize(("wire", "packet"), VECTORS)
def test_parse(wire: bytes, packet: RtpPacket) -> None:
    assert parse_rtp(wire) == packet


@pytest.mark.parametrize(("wire", "packet"), VECTORS)
def test_build(wire: bytes, packet: RtpPacket) -> None:
    assert packet.to_bytes() == wire


MALFORMED = [
    pytest.param(b"", "RTP packet of 0 octets is shorter than the 12-octet header", id="empty"),
    pytest.param(
        bytes.fromhex("80 00 0001 00000000 000000"),
        "RTP packet of 11 octets is shorter than the 12-octet header",
        id="short-header",
    ),
    pytest.param(
        bytes.fromhex("40 00 0001 00000000 00000001"), "RTP version 1, expected 2", id="v1"
    ),
    pytest.param(
        # An RTCP receiver report is version 2 too, but this one is cut in the header.
        bytes.fromhex("00 c9 0001 00000000 00000001"),
        "RTP version 0, expected 2",
        id="v0",
    ),
    pytest.param(
        bytes.fromhex("83 00 0001 00000000 00000001 00000002 00000003"),
        "RTP packet too short for its 3 CSRCs",
        id="csrc-overrun",
    ),
    pytest.param(
        bytes.fromhex("90 00 0001 00000000 00000001 bede"),
        "RTP packet too short for its header extension",
        id="extension-header-cut",
    ),
    pytest.param(
        bytes.fromhex("90 00 0001 00000000 00000001 bede0002 00000000"),
        "RTP header extension of 2 words overruns the packet",
        id="extension-overrun",
    ),
    pytest.param(
        bytes.fromhex("a0 00 0001 00000000 00000001 ff 00"),
        "RTP padding count 0 is impossible here",
        id="padding-zero",
    ),
    pytest.param(
        bytes.fromhex("a0 00 0001 00000000 00000001 ff 03"),
        "RTP padding count 3 is impossible here",
        id="padding-beyond-payload",
    ),
]


@pytest.mark.parametrize(("wire", "message"), MALFORMED)
def test_malformed(wire: bytes, message: str) -> None:
    with pytest.raises(MalformedRtp) as caught:
        parse_rtp(wire)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"payload_type": 128}, "RTP payload_type 128 does not fit in 7 bits"),
        ({"sequence": 65536}, "RTP sequence 65536 does not fit in 16 bits"),
        ({"timestamp": -1}, "RTP timestamp -1 does not fit in 32 bits"),
        ({"ssrc": 1 << 32}, "RTP ssrc 4294967296 does not fit in 32 bits"),
        ({"padding": 256}, "RTP padding 256 does not fit in 8 bits"),
        ({"csrc": tuple(range(16))}, "RTP carries at most 15 CSRCs, not 16"),
        ({"csrc": (1 << 32,)}, "an RTP CSRC does not fit in 32 bits"),
        (
            {"extension": RtpExtension(1, b"abc")},
            "RTP extension data must be whole 32-bit words, < 2**16 of them",
        ),
        (
            {"extension": RtpExtension(1 << 16, b"")},
            "RTP extension profile does not fit in 16 bits",
        ),
    ],
)
def test_building_refuses_fields_that_do_not_fit(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0}
    with pytest.raises(ValueError) as caught:
        RtpPacket(**{**arguments, **fields})  # type: ignore[arg-type]
    assert str(caught.value) == message


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 0xFFFF),
        data=st.integers(0, 8).flatmap(
            lambda words: st.binary(min_size=4 * words, max_size=4 * words)
        ),
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    assert parse_rtp(packet.to_bytes()) == packet


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_malformed(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except MalformedRtp:
        return
    assert len(packet.to_bytes()) == len(data)
