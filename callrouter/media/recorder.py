"""The stereo recorder: RTP packets of both legs in, one 8 kHz int16 stereo timeline out.

Rules of this file (pure: every time is an argument, no clock is read here):

- The timeline is the recording: sample ``n`` is ``start + n / 8000`` on the clock all times
  given here are on (the relay's loop clock). The caller (leg "a") is the left channel, the
  callee ("b") the right.
- Audio is placed by RTP timestamp, the sampling instant of the payload (RFC 3550 §5.1), so
  jitter does not move it, a lost packet leaves silence of its own length, and reordered
  packets fall into place. A stream (one SSRC of one leg) is anchored once: its first packet
  goes where its arrival time says, each later one at ``anchor + (timestamp - first timestamp)``
  with timestamps unwrapped modulo 2**32 (RFC 3550 §5.1: they wrap).
- The head is the latest time seen (any arrival or pull). The timeline before
  ``head - window`` is final: ``pull`` hands it out, and a packet landing there is late (the
  part of it after the boundary is still written). Within the window any order is fine. A
  packet placed more than ``jump`` seconds from its arrival time is late too: its timestamp
  cannot be right.
- Anchoring again, on the arrival of the packet that shows the need:
  - a new SSRC is a new stream (RFC 3550 §8.2: e.g. a transfer to another media server);
  - the newest packet of a stream lands more than ``jump`` from its arrival time: the sender
    restarted its timestamps (after a hold, or a re-INVITE);
  - no packet of a stream could be placed for a whole ``window``: its timestamps stood still
    while it was silent, so its audio lags real time, or its sequence numbers restarted and
    its packets look old. A single straggler, however late, never moves a stream.
- A packet whose (SSRC, sequence number) was seen recently is a duplicate and is ignored.
- Only PCMU and PCMA are decoded; telephone-event (RFC 4733), comfort noise (RFC 3389) and any
  other payload type are skipped and counted: the recording is silent there.
- Pausing mutes both channels from the pause to the resume on the timeline, whenever the
  packets for that span arrive, and also drops every packet that arrives while paused wherever
  it would land, so audio carried during the pause is never written (PCI DSS: card numbers
  read out must not be recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from callrouter.media.g711 import ALAW_TO_LINEAR, RATE, ULAW_TO_LINEAR
from callrouter.media.rtp import PAYLOAD_PCMA, PAYLOAD_PCMU, MalformedRtp, RtpPacket, parse_rtp

__all__ = ["Codec", "LegCounters", "RecorderCounters", "StereoRecorder"]

Codec = Literal["PCMU", "PCMA"]
_TABLES: Final[dict[Codec, NDArray[np.int16]]] = {"PCMU": ULAW_TO_LINEAR, "PCMA": ALAW_TO_LINEAR}
_STATIC: Final[dict[int, Codec]] = {PAYLOAD_PCMU: "PCMU", PAYLOAD_PCMA: "PCMA"}
_DYNAMIC: Final = range(96, 128)  # RFC 3551 §3: dynamic payload types, bound in SDP
_STREAMS_PER_LEG: Final = 4  # old SSRCs kept so their stragglers still fall into place
_SEEN_PER_STREAM: Final = 1024  # sequence numbers remembered to spot duplicates (~20 s)


@dataclass
class LegCounters:
    """What the recorder did with one leg's packets, for the call record."""

    placed: int = 0
    """Audio packets written into the recording (wholly or, when late, partly)."""
    late: int = 0
    """Audio packets that came after their place in the recording was final (or the recording
    had finished), or whose timestamp put them more than ``jump`` from their arrival."""
    duplicates: int = 0
    """Packets whose SSRC and sequence number had already been seen."""
    skipped: int = 0
    """Packets that are not PCMU/PCMA audio: telephone-event, comfort noise, unknown types."""
    malformed: int = 0
    """Datagrams that are not RTP."""
    muted: int = 0
    """Audio packets that arrived while the recording was paused."""
    reanchors: int = 0
    """Times a stream was placed again by arrival time: new SSRC or timestamp discontinuity."""


@dataclass
class RecorderCounters:
    """Counters of both legs (the relay's names: "a" the caller, "b" the callee)."""

    a: LegCounters = field(default_factory=LegCounters)
    b: LegCounters = field(default_factory=LegCounters)


@dataclass
class _Stream:
    """One SSRC of one leg. Timestamps and sequence numbers are unwrapped against the newest
    packet's (RFC 3550 Appendix A.1 does this for sequence numbers), counting from the anchor
    packet's; positions are timeline samples."""

    anchor: int
    """Timeline position of the anchor packet's first sample."""
    timestamp: int
    """Raw timestamp of the newest packet; ``offset`` is its distance from the anchor's."""
    offset: int
    sequence: int
    """Raw sequence number of the newest packet; ``extended_sequence`` counts from the anchor."""
    extended_sequence: int
    seen: dict[int, None] = field(default_factory=dict)
    """Extended sequence numbers of recent packets, oldest first: duplicates are in here."""
    stuck_since: int | None = None
    """Arrival position of the first of the packets that could not be placed since the last
    one that could."""

    @classmethod
    def anchored(cls, position: int, rtp: RtpPacket) -> _Stream:
        return cls(position, rtp.timestamp, 0, rtp.sequence, 0)

    def unwrap(self, rtp: RtpPacket) -> tuple[int, int]:
        """(timeline position, extended sequence number) of a packet of this stream."""
        offset = self.offset + _signed(rtp.timestamp - self.timestamp, 32)
        sequence = self.extended_sequence + _signed(rtp.sequence - self.sequence, 16)
        return self.anchor + offset, sequence

    def remember(self, rtp: RtpPacket, position: int, sequence: int) -> None:
        """Note a packet as seen; the newest becomes the reference for unwrapping."""
        if sequence >= self.extended_sequence:
            self.timestamp, self.offset = rtp.timestamp, position - self.anchor
            self.sequence, self.extended_sequence = rtp.sequence, sequence
        self.seen[sequence] = None
        if len(self.seen) > _SEEN_PER_STREAM:
            del self.seen[next(iter(self.seen))]


@dataclass
class _Leg:
    channel: int
    counters: LegCounters
    streams: dict[int, _Stream] = field(default_factory=dict)


def _signed(value: int, bits: int) -> int:
    """The difference of two wrapped counters, as the shorter way round (RFC 1982 style)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


class StereoRecorder:
    """Places both legs' G.711 RTP on one stereo timeline and hands it out as it becomes final.

    Feed it every RTP packet of the call with :meth:`packet`, drain it about once a second with
    :meth:`pull`, and end with :meth:`finish`. The concatenation of everything returned is the
    recording: interleaved little-endian int16, left = caller, right = callee, 8 kHz, as long
    as the call (from ``start`` to the ``now`` given to :meth:`finish`) to within a packet.

    :param start: when the recording starts, on the clock that will time the packets.
    :param window: seconds behind the newest arrival during which packets are still placed
        (the jitter tolerated); the recording trails real time by this much.
    :param jump: seconds between a packet's timestamp-derived place and its arrival beyond
        which its stream is anchored again from arrival time.
    :param payload_types: dynamic payload types (96-127) bound to PCMU/PCMA in the SDP;
        0 (PCMU) and 8 (PCMA) are static and always known.
    """

    def __init__(
        self,
        start: float,
        *,
        window: float = 0.3,
        jump: float = 2.0,
        payload_types: Mapping[int, Codec] | None = None,
    ) -> None:
        if window < 0 or jump <= window:
            raise ValueError(f"need 0 <= window < jump, got window={window} jump={jump}")
        codecs = dict(_STATIC)
        for payload_type, codec in (payload_types or {}).items():
            if payload_type not in _DYNAMIC:
                raise ValueError(f"payload type {payload_type} is not dynamic (96-127)")
            if codec not in _TABLES:
                raise ValueError(f"payload type {payload_type}: {codec!r} is not PCMU or PCMA")
            codecs[payload_type] = codec
        self._tables = {payload_type: _TABLES[codec] for payload_type, codec in codecs.items()}
        self.start = start
        self.window = window
        self.jump = jump
        self.counters = RecorderCounters()
        self._legs = {"a": _Leg(0, self.counters.a), "b": _Leg(1, self.counters.b)}
        self._window = round(window * RATE)
        self._jump = round(jump * RATE)
        # buffer[0] is timeline sample `emitted`: everything before it has been handed out.
        self._buffer: NDArray[np.int16] = np.zeros((RATE * 2, 2), dtype="<i2")
        self._emitted = 0
        self._head = 0
        self._last_end = 0  # end of the furthest audio placed (or muted) on either leg
        self._longest = 0  # samples in the longest audio packet seen
        self._muted: list[tuple[int, int]] = []  # closed pause spans not yet handed out
        self._paused_at: int | None = None
        self._finished = False

    # ---- inputs --------------------------------------------------------------------------

    def packet(self, leg: str, data: bytes, arrival: float) -> None:
        """Place one RTP packet (the relay's tap).

        :param leg: "a" (caller) or "b" (callee).
        :param data: the UDP payload as received.
        :param arrival: when it arrived, on the clock ``start`` is on.
        """
        if leg not in self._legs:
            raise ValueError(f"leg must be 'a' or 'b', not {leg!r}")
        state = self._legs[leg]
        counters = state.counters
        if self._finished:
            counters.late += 1
            return
        try:
            rtp = parse_rtp(data)
        except MalformedRtp:
            counters.malformed += 1
            return
        table = self._tables.get(rtp.payload_type)
        if table is None or not rtp.payload:
            counters.skipped += 1
            return
        here = self._position(arrival)
        self._head = max(self._head, here)
        final = self._final()
        size = len(rtp.payload)
        self._longest = max(self._longest, size)

        stream = state.streams.get(rtp.ssrc)
        if stream is None:
            if len(state.streams) >= _STREAMS_PER_LEG:
                del state.streams[next(iter(state.streams))]
            if state.streams:
                counters.reanchors += 1
            stream = state.streams[rtp.ssrc] = _Stream.anchored(here, rtp)
        position, sequence = stream.unwrap(rtp)
        if sequence in stream.seen:
            counters.duplicates += 1
            return
        fits = self._fits(position, size, here, final)
        if not fits and (
            # The newest packet is far from where its arrival puts it: the sender's clock
            # jumped. Or the stream has not been placeable for a whole window: its timestamps
            # stood still while it was silent, or its sequence numbers restarted.
            (sequence > stream.extended_sequence and abs(position - here) > self._jump)
            or (stream.stuck_since is not None and here - stream.stuck_since >= self._window)
        ):
            counters.reanchors += 1
            stream = state.streams[rtp.ssrc] = _Stream.anchored(here, rtp)
            position, sequence = here, 0
            fits = self._fits(position, size, here, final)
        stream.remember(rtp, position, sequence)
        if not fits:
            counters.late += 1
            if stream.stuck_since is None:
                stream.stuck_since = here
            return
        stream.stuck_since = None

        first = max(position, final)
        end = position + size
        self._last_end = max(self._last_end, end)
        if self._paused_at is not None:
            counters.muted += 1
            return
        counters.placed += 1
        samples = table[np.frombuffer(rtp.payload, np.uint8)[first - position :]]
        self._write(state.channel, first, samples)

    def pause(self, now: float) -> None:
        """Stop recording audio from ``now`` until :meth:`resume`. Idempotent.

        The span from ``now`` to the resume is silent on both channels; audio already placed
        there (a leg running slightly ahead) is erased. The part of the timeline already
        handed out by :meth:`pull` cannot be recalled, so the span starts no earlier.
        """
        if self._paused_at is not None or self._finished:
            return
        self._paused_at = max(self._position(now), self._emitted)
        self._buffer[self._paused_at - self._emitted :] = 0

    def resume(self, now: float) -> None:
        """Record again from ``now``. Idempotent."""
        if self._paused_at is None:
            return
        self._muted.append((self._paused_at, max(self._position(now), self._paused_at)))
        self._paused_at = None

    # ---- outputs -------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether the recorder is paused."""
        return self._paused_at is not None

    def pull(self, now: float) -> bytes:
        """The recording from where the last pull ended up to ``now - window``: final audio.

        :returns: interleaved little-endian int16 stereo PCM (4 bytes a sample), silence where
            nothing arrived; empty once finished.
        """
        if self._finished:
            return b""
        self._head = max(self._head, self._position(now))
        return self._take(self._final())

    def finish(self, now: float) -> bytes:
        """The rest of the recording; further packets are counted late and pulls are empty.

        The recording ends at ``now`` (so a leg whose last packets were lost keeps the call's
        length) or at the end of the last audio placed, if that is later, but by no more than
        one packet: audio is placed a packet's length ahead of its arrival, so the final
        packet would otherwise be cut, and a leg whose timestamps run ahead of its arrivals
        must not stretch the recording past the call.
        """
        if self._finished:
            return b""
        here = self._position(now)
        end = max(here, min(self._last_end, here + self._longest))
        self._finished = True
        return self._take(end)

    # ---- internals -----------------------------------------------------------------------

    def _position(self, time: float) -> int:
        return round((time - self.start) * RATE)

    def _final(self) -> int:
        """Timeline samples before this are final: handed out or about to be."""
        return max(self._emitted, self._head - self._window)

    def _fits(self, position: int, size: int, here: int, final: int) -> bool:
        """Whether a packet can be placed: some of it after the final boundary, and not so far
        from its arrival that its timestamp must be wrong (which also bounds the buffer)."""
        return position + size > final and abs(position - here) <= self._jump

    def _reserve(self, end: int) -> None:
        """Make the buffer reach timeline sample ``end``."""
        needed = end - self._emitted
        if needed > len(self._buffer):
            grown = np.zeros((max(needed, 2 * len(self._buffer)), 2), dtype="<i2")
            grown[: len(self._buffer)] = self._buffer
            self._buffer = grown

    def _write(self, channel: int, first: int, samples: NDArray[np.int16]) -> None:
        end = first + len(samples)
        self._reserve(end)
        self._buffer[first - self._emitted : end - self._emitted, channel] = samples
        for muted_from, muted_to in self._muted:
            start, stop = max(muted_from, first), min(muted_to, end)
            if start < stop:
                self._buffer[start - self._emitted : stop - self._emitted, channel] = 0

    def _take(self, end: int) -> bytes:
        """Hand out the timeline up to ``end`` and forget it."""
        count = end - self._emitted
        if count <= 0:
            return b""
        self._reserve(end)
        out = self._buffer[:count].tobytes()
        self._buffer[: len(self._buffer) - count] = self._buffer[count:]
        self._buffer[len(self._buffer) - count :] = 0
        self._emitted = end
        self._muted = [span for span in self._muted if span[1] > end]
        return out
