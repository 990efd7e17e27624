"""The stereo recorder: placement by RTP timestamp, losses, jitter, re-anchoring, pause."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from callrouter.media.g711 import alaw_decode, ulaw_decode
from callrouter.media.prompt import packetize, tone
from callrouter.media.recorder import LegCounters, StereoRecorder
from callrouter.media.rtp import RtpPacket, parse_rtp

START = 1000.0
PACKET = 160  # samples in 20 ms
Event = tuple[float, str, bytes]  # (time, "a" / "b" / "pause" / "resume", packet)


@dataclass
class Leg:
    """A synthetic leg: packet i is sampled at ``offset + i * 20 ms`` and arrives then."""

    name: str
    packets: list[bytes]
    offset: float = 0.0

    def arrival(self, index: int) -> float:
        return START + self.offset + index * 0.02

    def events(self, indices: Iterable[int] | None = None) -> list[Event]:
        chosen = range(len(self.packets)) if indices is None else indices
        return [(self.arrival(i), self.name, self.packets[i]) for i in chosen]


def leg(
    name: str,
    frequency: float,
    seconds: float,
    offset: float = 0.0,
    *,
    ssrc: int | None = None,
    sequence: int = 0,
    timestamp: int = 0,
) -> Leg:
    """A PCMU tone; the caller's SSRC is 0x1000 and the callee's 0x2000 unless given."""
    if ssrc is None:
        ssrc = 0x1000 if name == "a" else 0x2000
    audio = tone(frequency, seconds)
    return Leg(name, packetize(audio, ssrc=ssrc, sequence=sequence, timestamp=timestamp), offset)


def record(
    events: Sequence[Event], end: float, recorder: StereoRecorder | None = None, every: float = 1.0
) -> tuple[NDArray[np.int16], StereoRecorder]:
    """Deliver events in the given order, pulling every ``every`` seconds, then finish."""
    recorder = recorder or StereoRecorder(START)
    chunks = []
    next_pull = START + every
    for time, what, data in events:
        while time >= next_pull:
            chunks.append(recorder.pull(next_pull))
            next_pull += every
        if what == "pause":
            recorder.pause(time)
        elif what == "resume":
            recorder.resume(time)
        else:
            recorder.packet(what, data, time)
    while next_pull < end:
        chunks.append(recorder.pull(next_pull))
        next_pull += every
    chunks.append(recorder.finish(end))
    return np.frombuffer(b"".join(chunks), dtype="<i2").reshape(-1, 2), recorder


def in_time_order(*groups: Iterable[Event]) -> list[Event]:
    """Merge by time; a pause or resume acts before packets that arrive at the same instant."""
    events = (event for group in groups for event in group)
    return sorted(events, key=lambda event: (event[0], event[1] not in ("pause", "resume")))


def expected(length: int, *legs: tuple[Leg, Iterable[int]]) -> NDArray[np.int16]:
    """Where each delivered packet must be: its own decoded samples at its own timestamp."""
    out = np.zeros((length, 2), dtype=np.int16)
    for synthetic, indices in legs:
        channel = 0 if synthetic.name == "a" else 1
        for i in indices:
            packet = parse_rtp(synthetic.packets[i])
            decode = ulaw_decode if packet.payload_type == 0 else alaw_decode
            at = round(synthetic.offset * 8000) + i * PACKET
            out[at : at + PACKET, channel] = decode(packet.payload)[: max(0, length - at)]
    return out


def dominant_frequency(samples: NDArray[np.int16]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.argmax(spectrum) * 8000 / len(samples))


def test_caller_left_callee_right_by_spectrum() -> None:
    caller = leg("a", 440.0, 4.0)
    callee = leg("b", 1000.0, 3.0, offset=1.0)  # answered a second in
    pcm, recorder = record(in_time_order(caller.events(), callee.events()), START + 4.0)
    assert pcm.shape == (32000, 2)
    answered = pcm[8000:]
    assert dominant_frequency(answered[:, 0]) == pytest.approx(440.0, abs=1.0)
    assert dominant_frequency(answered[:, 1]) == pytest.approx(1000.0, abs=1.0)
    assert not pcm[:8000, 1].any()  # nothing on the callee's side before the answer
    assert recorder.counters.a == LegCounters(placed=200)
    assert recorder.counters.b == LegCounters(placed=150)


def test_in_order_packets_are_placed_sample_exact() -> None:
    caller, callee = leg("a", 440.0, 2.0), leg("b", 1000.0, 1.0, offset=0.5)
    pcm, _ = record(in_time_order(caller.events(), callee.events()), START + 2.0)
    assert np.array_equal(pcm, expected(16000, (caller, range(100)), (callee, range(50))))


def test_pcma_and_a_dynamic_payload_type() -> None:
    caller = Leg("a", packetize(tone(440.0, 0.2), codec="PCMA", ssrc=1, sequence=0, timestamp=0))
    callee = leg("b", 1000.0, 0.2)
    callee.packets = [  # the callee's SDP bound PCMU to payload type 97
        RtpPacket(97, p.sequence, p.timestamp, p.ssrc, p.payload).to_bytes()
        for p in map(parse_rtp, callee.packets)
    ]
    recorder = StereoRecorder(START, payload_types={97: "PCMU"})
    pcm, _ = record(in_time_order(caller.events(), callee.events()), START + 0.2, recorder)
    reference = leg("b", 1000.0, 0.2)
    assert np.array_equal(pcm, expected(1600, (caller, range(10)), (reference, range(10))))


@pytest.mark.parametrize(
    ("payload_types", "message"),
    [
        ({0: "PCMA"}, "payload type 0 is not dynamic"),
        ({8: "PCMU"}, "payload type 8 is not dynamic"),
        ({101: "G722"}, "'G722' is not PCMU or PCMA"),
    ],
)
def test_static_payload_types_cannot_be_rebound(
    payload_types: dict[int, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        StereoRecorder(START, payload_types=payload_types)  # type: ignore[arg-type]


def test_five_percent_loss_keeps_length_and_places_the_rest_exactly() -> None:
    rng = random.Random(6)
    caller, callee = leg("a", 440.0, 10.0), leg("b", 1000.0, 10.0)
    kept_a = [i for i in range(500) if rng.random() >= 0.05]
    kept_b = [i for i in range(500) if rng.random() >= 0.05]
    # The callee's last 25 packets are lost as well: the recording still lasts the call.
    kept_b = [i for i in kept_b if i < 475]
    pcm, recorder = record(
        in_time_order(caller.events(kept_a), callee.events(kept_b)), START + 10.0
    )
    assert len(pcm) == 80000
    assert np.array_equal(pcm, expected(80000, (caller, kept_a), (callee, kept_b)))
    assert recorder.counters.a.placed == len(kept_a)
    assert recorder.counters.b.placed == len(kept_b)
    assert not pcm[475 * PACKET :, 1].any()


def test_reordering_and_duplicates_change_nothing() -> None:
    caller, callee = leg("a", 440.0, 3.0), leg("b", 1000.0, 3.0)
    reference, _ = record(in_time_order(caller.events(), callee.events()), START + 3.0)

    rng = random.Random(4)
    shuffled: list[Event] = []
    for synthetic in (caller, callee):
        order = list(range(len(synthetic.packets)))
        for i in range(1, len(order) - 1, 3):  # swap neighbours, now and then three apart
            j = i + rng.choice((1, 1, 3)) if i + 3 < len(order) else i + 1
            order[i], order[j] = order[j], order[i]
        duplicated = [i for i in order for _ in range(2 if i % 7 == 0 else 1)]
        # Deliveries stay on the 20 ms grid; it is their content that comes out of order.
        shuffled += [
            (synthetic.arrival(slot * len(order) // len(duplicated)), synthetic.name, packet)
            for slot, packet in enumerate(synthetic.packets[i] for i in duplicated)
        ]
    pcm, recorder = record(sorted(shuffled, key=lambda event: event[0]), START + 3.0)
    assert np.array_equal(pcm, reference)
    assert recorder.counters.a == LegCounters(placed=150, duplicates=22)
    assert recorder.counters.b == LegCounters(placed=150, duplicates=22)


def test_timestamp_and_sequence_wraparound() -> None:
    wrapping = leg("a", 440.0, 2.0, timestamp=2**32 - 37 * PACKET - 5, sequence=65500)
    plain = leg("a", 440.0, 2.0)
    pcm, recorder = record(wrapping.events(), START + 2.0)
    assert np.array_equal(pcm, expected(16000, (plain, range(100))))
    assert recorder.counters.a == LegCounters(placed=100)


def test_a_packet_reordered_across_the_wrap_still_falls_into_place() -> None:
    wrapping = leg("a", 440.0, 1.0, timestamp=2**32 - 10 * PACKET, sequence=65530)
    events = wrapping.events()
    # Timestamp 2**32 - 160 is delivered in the slot of timestamp 160, and the other way round.
    events[9], events[11] = (
        (events[9][0], "a", wrapping.packets[11]),
        (events[11][0], "a", wrapping.packets[9]),
    )
    pcm, _ = record(events, START + 1.0)
    assert np.array_equal(pcm, expected(8000, (leg("a", 440.0, 1.0), range(50))))


def test_a_new_ssrc_is_anchored_on_arrival() -> None:
    first = leg("a", 440.0, 1.0)
    # A transfer: a new source with unrelated counters takes over at 1.0 s.
    second = leg("a", 880.0, 1.0, offset=1.0, ssrc=0x9999, sequence=31000, timestamp=123456789)
    straggler = (first.arrival(50) + 0.01, "a", first.packets[49])  # late but within the window
    events = in_time_order(first.events(range(49)), second.events(), [straggler])
    pcm, recorder = record(events, START + 2.0)
    assert np.array_equal(pcm, expected(16000, (first, range(50)), (second, range(50))))
    assert recorder.counters.a == LegCounters(placed=100, reanchors=1)


def test_a_timestamp_jump_re_anchors_from_arrival() -> None:
    caller = leg("a", 440.0, 2.0)
    packets = [parse_rtp(data) for data in caller.packets]
    caller.packets = [
        RtpPacket(0, p.sequence, (p.timestamp + (40_000_000 if i >= 50 else 0)) % 2**32, p.ssrc,
                  p.payload).to_bytes()
        for i, p in enumerate(packets)
    ]  # fmt: skip
    pcm, recorder = record(caller.events(), START + 2.0)
    assert np.array_equal(pcm, expected(16000, (leg("a", 440.0, 2.0), range(100))))
    assert recorder.counters.a == LegCounters(placed=100, reanchors=1)


def test_a_stream_whose_timestamps_stood_still_during_a_hold_is_re_anchored() -> None:
    # The caller goes quiet for a second and resumes with timestamps continuing from before
    # the hold: by timestamp its audio belongs a second in the past, which is final already.
    before, after = leg("a", 440.0, 1.0), leg("a", 440.0, 1.0, offset=2.0, sequence=50)
    after.packets = [
        RtpPacket(0, p.sequence, p.timestamp + 50 * PACKET, p.ssrc, p.payload).to_bytes()
        for p in map(parse_rtp, after.packets)
    ]
    pcm, recorder = record(before.events() + after.events(), START + 3.0)
    counters = recorder.counters.a
    # Lost: what arrived while the stream stayed behind for one window (300 ms = 15 packets).
    assert counters == LegCounters(placed=85, late=15, reanchors=1)
    assert np.array_equal(pcm, expected(24000, (before, range(50)), (after, range(15, 50))))


def test_a_stream_that_restarts_its_counters_looking_old_is_re_anchored_after_a_window() -> None:
    # Same SSRC, but after a re-INVITE the sender restarts its sequence numbers lower (its
    # packets look like old stragglers) and its timestamps elsewhere.
    before = leg("a", 440.0, 1.0, sequence=40000)
    after = leg("a", 440.0, 1.0, offset=1.0, sequence=39000, timestamp=987654321)
    pcm, recorder = record(before.events() + after.events(), START + 2.0)
    assert recorder.counters.a == LegCounters(placed=85, late=15, reanchors=1)
    assert np.array_equal(pcm, expected(16000, (before, range(50)), (after, range(15, 50))))


def test_late_packets_are_counted_and_do_not_touch_final_audio() -> None:
    caller = leg("a", 440.0, 3.0)
    late = (START + 2.5, "a", caller.packets[10])  # 2.3 s late, after the pull at 2.0 s
    reference, _ = record(caller.events(range(10)) + caller.events(range(11, 150)), START + 3.0)
    pcm, recorder = record(
        in_time_order(caller.events(range(10)), caller.events(range(11, 150)), [late]),
        START + 3.0,
    )
    assert np.array_equal(pcm, reference)
    assert recorder.counters.a == LegCounters(placed=149, late=1)


def test_a_late_packet_partly_in_the_window_fills_what_is_not_final() -> None:
    recorder = StereoRecorder(START, window=0.3)
    caller = leg("a", 440.0, 1.0)
    recorder.packet("a", caller.packets[0], START)
    recorder.packet("a", caller.packets[49], START + 0.5)
    # Now is 0.5 s, so the timeline up to 0.2 s (sample 1600) is final. Packet 9 covers
    # 1440..1600: late. One covering 1550..1710 is written from 1600 on.
    recorder.packet("a", caller.packets[9], START + 0.5)
    straddling = parse_rtp(caller.packets[11])
    shifted = RtpPacket(0, 11, 1550, straddling.ssrc, straddling.payload).to_bytes()
    recorder.packet("a", shifted, START + 0.5)
    assert recorder.counters.a == LegCounters(placed=3, late=1)
    final = np.frombuffer(recorder.pull(START + 0.5), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(final, expected(1600, (caller, [0])))
    tail = np.frombuffer(recorder.pull(START + 0.6), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(tail[:110, 0], ulaw_decode(straddling.payload)[50:])
    assert not tail[110:, 0].any()


def test_pause_silences_exactly_the_paused_span() -> None:
    caller, callee = leg("a", 440.0, 4.0), leg("b", 1000.0, 4.0)
    events = in_time_order(
        caller.events(),
        callee.events(),
        [(START + 1.5, "pause", b""), (START + 2.5, "resume", b"")],
    )
    pcm, recorder = record(events, START + 4.0)
    reference = expected(32000, (caller, range(200)), (callee, range(200)))
    reference[12000:20000] = 0
    assert np.array_equal(pcm, reference)
    assert recorder.counters.a == LegCounters(placed=150, muted=50)
    assert not recorder.paused


def test_pause_mid_packet_silences_the_span_and_all_packets_relayed_during_it() -> None:
    caller = leg("a", 440.0, 1.0)
    pause, resume = START + 0.3131, START + 0.6007  # samples 2505 and 4806
    events = in_time_order([(pause, "pause", b""), (resume, "resume", b"")], caller.events())
    pcm, recorder = record(events, START + 1.0)
    reference = expected(8000, (caller, range(50)))
    # Silent from the pause to the sample; packets 16-30 arrived while paused and are not
    # written at all, so the silence reaches the end of packet 30 (4960), past the resume.
    reference[2505:4960] = 0
    assert np.array_equal(pcm, reference)
    assert recorder.counters.a == LegCounters(placed=35, muted=15)


def test_audio_from_the_paused_span_stays_silent_however_late_it_arrives() -> None:
    caller = leg("a", 440.0, 3.0)
    # Packets sampled during the pause (1.0-2.0 s) arrive 250 ms late, after the resume.
    delayed = [(caller.arrival(i) + 0.25, "a", caller.packets[i]) for i in range(50, 100)]
    events = in_time_order(
        caller.events(range(50)),
        caller.events(range(100, 150)),
        delayed,
        [(START + 1.0, "pause", b""), (START + 2.0, "resume", b"")],
    )
    pcm, recorder = record(events, START + 3.0)
    assert not pcm[8000:16000].any()
    assert np.array_equal(pcm[16000:], expected(24000, (caller, range(150)))[16000:])
    assert recorder.counters.a.muted == 38  # those that arrived before the resume


def test_audio_relayed_while_paused_is_not_written_even_where_it_lands_after_the_resume() -> None:
    # The caller's first packets were held up 200 ms (a path warming up) and came in a burst:
    # the stream is anchored on the first, so all its audio sits 200 ms after the time it
    # arrives, and what it sends during the pause lands up to 200 ms after the resume.
    caller = leg("a", 440.0, 3.0)
    events = [(max(caller.arrival(i), START + 0.2), "a", caller.packets[i]) for i in range(150)]
    controls: list[Event] = [(START + 1.0, "pause", b""), (START + 2.0, "resume", b"")]
    pcm, recorder = record(in_time_order(controls, events), START + 3.0)
    ahead = Leg("a", caller.packets, offset=0.2)
    # Packets 50-99 arrived while paused (they belong at 1.2-2.2 s): none is written. Packets
    # 40-49, placed at 1.0-1.2 s before the pause, are erased by it. The recording ends one
    # packet after the call, where the last audio is cut.
    reference = expected(24160, (ahead, [*range(40), *range(100, 150)]))
    assert not reference[8000:17600].any()
    assert np.array_equal(pcm, reference)
    assert recorder.counters.a == LegCounters(placed=100, muted=50)


def test_pause_and_resume_are_idempotent_and_a_call_may_end_paused() -> None:
    caller = leg("a", 440.0, 2.0)
    recorder = StereoRecorder(START)
    events = in_time_order(
        caller.events(),
        [
            (START + 1.0, "pause", b""),
            (START + 1.2, "pause", b""),
            (START + 1.5, "resume", b""),
            (START + 1.6, "resume", b""),
            (START + 1.7, "pause", b""),
        ],
    )
    pcm, _ = record(events, START + 2.0, recorder)
    reference = expected(16000, (caller, range(100)))
    reference[8000:12000] = 0
    reference[13600:] = 0
    assert np.array_equal(pcm, reference)
    assert recorder.paused


def test_non_audio_is_skipped_and_counted() -> None:
    caller = leg("a", 440.0, 0.2)
    dtmf = RtpPacket(101, 5, 800, 0x1000, bytes.fromhex("058a0320")).to_bytes()
    comfort_noise = RtpPacket(13, 6, 960, 0x1000, b"\x40").to_bytes()
    g729 = RtpPacket(18, 7, 1120, 0x1000, b"\x00" * 20).to_bytes()
    empty = RtpPacket(0, 8, 1280, 0x1000, b"").to_bytes()
    extras = [(START + 0.1, "a", p) for p in (dtmf, comfort_noise, g729, empty)]
    junk = [(START + 0.1, "a", b"\x00" * 40), (START + 0.1, "b", b"hello")]
    pcm, recorder = record(in_time_order(caller.events(), extras, junk), START + 0.2)
    assert np.array_equal(pcm, expected(1600, (caller, range(10))))
    assert recorder.counters.a == LegCounters(placed=10, skipped=4, malformed=1)
    assert recorder.counters.b == LegCounters(malformed=1)


def test_finish_lasts_the_call_to_within_a_packet() -> None:
    caller = leg("a", 440.0, 2.0)
    # Packets arrive as their audio ends (20 ms after their timestamp): the last one reaches
    # a packet beyond the moment the call ends, and is kept.
    pcm, _ = record([(t + 0.02, w, d) for t, w, d in caller.events()], START + 2.0)
    assert len(pcm) == 16160
    # Ended early (BYE while audio was still queued at the sender): cut at now + one packet.
    pcm, _ = record(caller.events(), START + 1.0)
    assert len(pcm) == 8160
    # Nothing at all: the length of the call in silence.
    pcm, _ = record([], START + 1.5)
    assert pcm.shape == (12000, 2)
    assert not pcm.any()


def test_after_finish_packets_are_late_and_pulls_empty() -> None:
    recorder = StereoRecorder(START)
    assert len(recorder.finish(START + 0.1)) == 800 * 4
    recorder.packet("a", leg("a", 440.0, 0.02).packets[0], START + 0.2)
    assert recorder.pull(START + 5.0) == b""
    assert recorder.finish(START + 5.0) == b""
    assert recorder.counters.a == LegCounters(late=1)


def test_unknown_leg_and_bad_parameters_are_refused() -> None:
    recorder = StereoRecorder(START)
    with pytest.raises(ValueError, match="leg must be 'a' or 'b', not 'c'"):
        recorder.packet("c", b"", START)
    with pytest.raises(ValueError, match="need 0 <= window < jump"):
        StereoRecorder(START, window=3.0, jump=2.0)


def test_the_buffer_grows_when_nobody_pulls() -> None:
    caller = leg("a", 440.0, 5.0)
    recorder = StereoRecorder(START)
    for event in caller.events():
        recorder.packet(*event[1:], event[0])
    pcm = np.frombuffer(recorder.finish(START + 5.0), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(pcm, expected(40000, (caller, range(250))))


@st.composite
def jittered(draw: st.DrawFn) -> tuple[list[int], float]:
    """Packet 0 first (it anchors the stream), then the rest displaced by up to 14 places."""
    count = draw(st.integers(2, 60))
    displacement = [draw(st.floats(0, 14)) for _ in range(count - 1)]
    order = sorted(range(1, count), key=lambda i: i + displacement[i - 1])
    every = draw(st.sampled_from([0.1, 0.37, 1.0, 2.5]))
    return [0, *order], every


@given(jittered(), st.booleans())
def test_any_order_within_the_window_gives_the_in_order_recording(
    case: tuple[list[int], float], both_legs: bool
) -> None:
    order, every = case
    count = len(order)
    caller, callee = leg("a", 440.0, count * 0.02), leg("b", 1000.0, count * 0.02)
    reference, _ = record(
        in_time_order(caller.events(), callee.events() if both_legs else []), START + count * 0.02
    )
    # Deliveries keep the 20 ms grid; the packets on it are out of order.
    shuffled = [(caller.arrival(slot), "a", caller.packets[i]) for slot, i in enumerate(order)]
    events = in_time_order(shuffled, callee.events() if both_legs else [])
    pcm, recorder = record(events, START + count * 0.02, every=every)
    assert np.array_equal(pcm, reference)
    assert recorder.counters.a == LegCounters(placed=count)


@given(st.sets(st.integers(0, 99)), st.floats(0.0, 0.3), st.sampled_from([0.2, 1.0]))
def test_losses_never_change_length_or_placement(
    lost: set[int], end_delay: float, every: float
) -> None:
    caller = leg("a", 440.0, 2.0)
    kept = [i for i in range(100) if i not in lost]
    end = START + 2.0 + end_delay
    pcm, _ = record(caller.events(kept), end, every=every)
    assert len(pcm) == round((end - START) * 8000)
    assert np.array_equal(pcm[:16000], expected(16000, (caller, kept)))
