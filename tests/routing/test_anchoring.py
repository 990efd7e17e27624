"""Anchoring recorded calls: the SDP each party sees and the commands the worker gets."""

from __future__ import annotations

import asyncio
from typing import Any

from callrouter.media.pool import MediaPool, MediaSlot
from callrouter.media.relay import PortAllocator
from callrouter.routing.anchoring import MediaAnchor
from callrouter.sip.sdp import parse_sdp

OFFER = (
    b"v=0\r\no=carrier 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 9 0 8 18 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)
ANSWER = (
    b"v=0\r\no=pbx 7 7 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


class Channel:
    """The worker's side of the control channel, as far as these tests need it: what was sent,
    in order, and a reply the test settles."""

    running = True
    answering = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[asyncio.Future[dict[str, Any]]] = []

    def send_nowait(self, cmd: str, /, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        self.sent.append((cmd, fields))
        self.replies.append(asyncio.get_running_loop().create_future())
        return self.replies[-1]


def one_worker(channel: Channel, first: int = 30000, last: int = 30010) -> MediaPool:
    return MediaPool([MediaSlot(0, channel, PortAllocator(first, last))])


def ports_in_use(media: MediaAnchor) -> int:
    return sum(slot.ports.in_use for slot in media.workers.slots)


def anchor(channel: Channel, failures: list[tuple[str, str]] | None = None) -> MediaAnchor:
    return MediaAnchor(
        one_worker(channel),
        "203.0.113.5",
        lambda key, reason: (failures if failures is not None else []).append((key, reason)),
    )


async def test_the_offer_is_anchored_and_limited_to_what_can_be_recorded() -> None:
    channel = Channel()
    media = anchor(channel)
    offer, reason = media.offer("call-1", OFFER, nat=False)
    assert reason is None and offer is not None
    sdp = parse_sdp(offer)
    (section,) = sdp.media
    assert sdp.connection_address == "203.0.113.5"
    assert section.formats == ["0", "8", "101"]
    assert "fmtp:18 annexb=no" not in section.attributes
    assert "fmtp:101 0-16" in section.attributes
    (a_port, b_port) = channel.sent[0][1]["ports"]
    assert section.port == b_port  # the destination sends to our "b" side
    assert channel.sent[:2] == [
        ("create", {"call": "call-1", "ports": [a_port, b_port]}),
        (
            "signal",
            {"call": "call-1", "leg": "a", "rtp": ["192.0.2.10", 4000], "rtcp": None, "nat": False},
        ),
    ]
    towards_caller = parse_sdp(media.towards_caller("call-1", ANSWER))
    assert towards_caller.connection_address == "203.0.113.5"
    assert towards_caller.media[0].port == a_port
    assert channel.sent[-1][1]["leg"] == "b" and channel.sent[-1][1]["rtp"] == [
        "198.51.100.20",
        6000,
    ]


async def test_calls_that_cannot_be_recorded_say_why_and_take_no_ports() -> None:
    channel = Channel()
    media = anchor(channel)
    g729 = OFFER.replace(b"9 0 8 18 101", b"18")
    assert media.offer("c", g729, nat=False) == (
        None,
        "the caller offered no G.711 codec (PCMU or PCMA)",
    )
    assert media.offer("c", b"", nat=False)[1] == "the caller sent no SDP offer"
    video = OFFER + b"m=video 4002 RTP/AVP 96\r\n"
    assert (
        media.offer("c", video, nat=False)[1] == "only calls with one audio stream can be recorded"
    )
    assert channel.sent == [] and ports_in_use(media) == 0


async def test_ports_run_out_cleanly_and_come_back_at_release() -> None:
    channel = Channel()
    media = MediaAnchor(one_worker(channel, 30000, 30004), "203.0.113.5", lambda *_: None)
    assert media.offer("one", OFFER, nat=False)[1] is None
    offer, reason = media.offer("two", OFFER, nat=False)
    assert offer is None and reason is not None and "no free media ports" in reason
    assert ports_in_use(media) == 2
    media.release("one")
    assert ports_in_use(media) == 0 and channel.sent[-1] == ("delete", {"call": "one"})
    assert media.offer("two", OFFER, nat=False)[1] is None


async def test_a_refused_command_is_reported_against_its_call() -> None:
    channel = Channel()
    failures: list[tuple[str, str]] = []
    media = anchor(channel, failures)
    media.offer("call-9", OFFER, nat=True)
    assert channel.sent[1][1]["nat"] is True
    settled = asyncio.Event()
    # Done-callbacks run in the order they were added: when ours runs, the anchor's has.
    channel.replies[0].add_done_callback(lambda _: settled.set())
    channel.replies[0].set_exception(RuntimeError("port 30000 in use"))
    await settled.wait()
    assert failures == [("call-9", "media worker refused create: port 30000 in use")]


async def test_sdp_of_calls_that_are_not_anchored_passes_through() -> None:
    media = anchor(Channel())
    assert media.towards_caller("unknown", ANSWER) == ANSWER
    assert media.towards_callee("unknown", OFFER) == OFFER


async def test_an_early_answer_for_an_announcement_picks_one_g711_codec_at_our_port() -> None:
    channel = Channel()
    media = anchor(channel)
    media.offer("call-1", OFFER, nat=False)
    a_port = channel.sent[0][1]["ports"][0]
    body, codec = media.early_answer("call-1")
    sdp = parse_sdp(body)
    assert codec == "PCMU"
    assert sdp.media[0].formats == ["0", "101"] and sdp.media[0].port == a_port
    assert sdp.origin is not None and sdp.origin.startswith("callrouter ")
    assert sdp.connection_address == "203.0.113.5"
    media.play("call-1", "recording-notice", codec)
    assert channel.sent[-1] == (
        "play",
        {"call": "call-1", "prompt": "recording-notice", "codec": "PCMU"},
    )


async def test_bound_says_whether_the_worker_holds_the_ports_and_withdraw_frees_them() -> None:
    channel = Channel()
    failures: list[tuple[str, str]] = []
    media = anchor(channel, failures)
    media.offer("held", OFFER, nat=False)
    media.offer("fine", OFFER, nat=False)
    held, fine = media.bound("held"), media.bound("fine")
    assert not held.done() and not fine.done()  # nothing may point at the ports yet
    create_held = channel.replies[0]
    create_fine = next(
        reply
        for (cmd, fields), reply in zip(channel.sent, channel.replies, strict=True)
        if cmd == "create" and fields["call"] == "fine"
    )
    create_held.set_exception(Exception("cannot bind RTP ports (30000, 30002): in use"))
    create_fine.set_result({"ok": True})
    assert await held == "media worker refused create: cannot bind RTP ports (30000, 30002): in use"
    assert await fine is None
    assert failures == [("held", await held)]

    media.withdraw("held")
    assert "held" not in media and "fine" in media
    assert channel.sent[-1] == ("delete", {"call": "held"})
    assert media.towards_caller("held", ANSWER) == ANSWER  # its SDP now passes through
    # Its ports are free again: of the range's five pairs, "fine" holds two, so a call fits.
    assert ports_in_use(media) == 2
    assert media.offer("next", OFFER, nat=False)[1] is None
    assert media.offer("one-too-many", OFFER, nat=False)[1] is not None


async def test_a_refusal_by_recording_space_anchors_nothing() -> None:
    channel = Channel()
    why: list[str | None] = ["not enough space for recordings: 1.0 MiB free"]
    media = MediaAnchor(one_worker(channel), "203.0.113.5", lambda *_: None, lambda: why[0])
    assert media.offer("c", OFFER, nat=False) == (None, why[0])
    assert channel.sent == [] and ports_in_use(media) == 0 and "c" not in media
    why[0] = None  # space came back
    assert media.offer("c", OFFER, nat=False)[1] is None


async def test_calls_go_to_the_worker_with_fewest_calls_and_stay_there() -> None:
    zero, one = Channel(), Channel()
    pool = MediaPool(
        [
            MediaSlot(0, zero, PortAllocator(30000, 30010)),
            MediaSlot(1, one, PortAllocator(30010, 30020)),
        ]
    )
    media = MediaAnchor(pool, "203.0.113.5", lambda *_: None)
    for key in ("a", "b", "c"):
        assert media.offer(key, OFFER, nat=False)[1] is None
    # a on 0, b on 1 (0 has more), c on 0 (a tie goes to the lower number).
    assert [fields["call"] for cmd, fields in zero.sent if cmd == "create"] == ["a", "c"]
    assert [fields["call"] for cmd, fields in one.sent if cmd == "create"] == ["b"]
    # Each worker's ports come from its own slice.
    assert all(30010 <= port < 30020 for port in one.sent[0][1]["ports"])
    media.record("b")
    media.release("a")
    assert one.sent[-1] == ("record", {"call": "b", "recording": "b"})
    assert zero.sent[-1] == ("delete", {"call": "a"})
    assert [slot.calls for slot in pool.slots] == [1, 1]


async def test_a_worker_that_is_down_or_silent_is_skipped_and_none_up_records_nothing() -> None:
    zero, one = Channel(), Channel()
    pool = MediaPool(
        [
            MediaSlot(0, zero, PortAllocator(30000, 30010)),
            MediaSlot(1, one, PortAllocator(30010, 30020)),
        ]
    )
    media = MediaAnchor(pool, "203.0.113.5", lambda *_: None)
    zero.running = False  # being restarted
    assert media.offer("a", OFFER, nat=False)[1] is None
    assert media.offer("b", OFFER, nat=False)[1] is None
    assert zero.sent == [] and len([c for c, _ in one.sent if c == "create"]) == 2
    zero.running = True
    one.answering = False  # its last command went unanswered: last resort only
    assert media.offer("c", OFFER, nat=False)[1] is None
    assert media.offer("d", OFFER, nat=False)[1] is None
    assert [fields["call"] for cmd, fields in zero.sent if cmd == "create"] == ["c", "d"]
    zero.running = one.running = False
    assert media.offer("e", OFFER, nat=False) == (None, "no media worker is running")
    assert "e" not in media


async def test_a_lost_worker_frees_only_its_own_calls_ports() -> None:
    zero, one = Channel(), Channel()
    pool = MediaPool(
        [
            MediaSlot(0, zero, PortAllocator(30000, 30010)),
            MediaSlot(1, one, PortAllocator(30010, 30020)),
        ]
    )
    media = MediaAnchor(pool, "203.0.113.5", lambda *_: None)
    media.offer("a", OFFER, nat=False)
    media.offer("b", OFFER, nat=False)
    media.forget(["a"])  # worker 0 died with call a
    assert [slot.ports.in_use for slot in pool.slots] == [0, 2]
    assert "a" not in media and "b" in media
