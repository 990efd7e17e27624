"""Anchoring a recorded call's media on a media worker: SDP rewriting and relay commands.

Rules of this file:
- Only recorded calls are anchored; other calls' SDP passes through untouched (media flows
  carrier <-> destination directly).
- Leg "a" is the caller's side of the relay, leg "b" the destination's. The caller is told to
  send to our "a" port, the destination to our "b" port; each leg's own SDP says where its
  party listens, and that goes to the worker as the leg's signalled address.
- Each call is placed on one of the server's media workers when it is anchored
  (:class:`~callrouter.media.pool.MediaPool`) and all its commands go to that worker. Ports are
  allocated here, from that worker's slice, not in the worker, so SDP is rewritten at once.
  Commands go out in order on the worker's socket; a refused command is reported through
  ``on_failure`` and noted on the call.
- A call is never pointed at ports the worker has not bound: the B2BUA waits for
  :meth:`MediaAnchor.bound` (the ``create`` reply, a round trip on a Unix socket) before any
  rewritten SDP leaves, and a call whose ports could not be bound (another process holds one,
  the worker is down) is withdrawn (:meth:`MediaAnchor.withdraw`) and connected unrecorded.
- The offer to the destination is limited to G.711 (PCMU, PCMA) and telephone-event, the only
  audio we can record. A caller offering neither is connected unrecorded, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from callrouter.media.pool import MediaPool, MediaSlot
from callrouter.media.relay import PortsExhausted
from callrouter.sip.errors import ParseError
from callrouter.sip.sdp import MediaSection, parse_sdp

__all__ = ["MediaAnchor"]

log = logging.getLogger(__name__)

RECORDABLE = ("PCMU/8000", "PCMA/8000")


@dataclass
class _Anchored:
    worker: MediaSlot
    """The worker the call was placed on, and whose ports it holds."""
    ports: tuple[int, int]
    nat: bool
    offer: bytes
    """The caller's offer as limited to what can be recorded (for an early answer)."""
    bound: asyncio.Future[str | None]
    """Settles when the worker has answered ``create``: None, or why the ports are not bound."""
    host: str
    """Our media address as both parties see it in SDP."""


class MediaAnchor:
    """The B2BUA's media side for recorded calls.

    :param workers: the media workers calls are placed on.
    :param address: the address written into SDP c= and o= lines (``[media] advertise``), or a
        function from the caller's media address to ours (the relay is bound to a wildcard and
        nothing is advertised: the interface that routes to the caller).
    :param on_failure: ``(call key, reason)`` when the worker refuses a call's command.
    :param refusal: why no new call may be recorded now (the recordings disk is nearly full),
        or None.
    """

    def __init__(
        self,
        workers: MediaPool,
        address: str | Callable[[str], str],
        on_failure: Callable[[str, str], None],
        refusal: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.workers = workers
        self.address = address
        self.on_failure = on_failure
        self.refusal = refusal
        self._calls: dict[str, _Anchored] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    def offer(self, key: str, body: bytes, *, nat: bool) -> tuple[bytes | None, str | None]:
        """Anchor the caller's offer: (the offer for the destination, None), or (None, why the
        call cannot be recorded)."""
        if (refused := self.refusal()) is not None:
            return None, refused
        if not body:
            return None, "the caller sent no SDP offer"
        try:
            sdp = parse_sdp(body)
        except ParseError:
            return None, "the caller's SDP cannot be read"
        if len(sdp.media) != 1 or sdp.media[0].media != "audio" or sdp.media[0].port == 0:
            return None, "only calls with one audio stream can be recorded"
        section = sdp.media[0]
        if not _limit_to_g711(section):
            return None, "the caller offered no G.711 codec (PCMU or PCMA)"
        address = sdp.media_address(section)
        if address is None:
            return None, "the caller's SDP has no connection address"
        worker = self.workers.place()
        if worker is None:
            return None, "no media worker is running"
        try:
            first = worker.ports.take()
        except PortsExhausted as exc:
            return None, f"no free media ports ({exc})"
        try:
            second = worker.ports.take()
        except PortsExhausted as exc:
            worker.ports.give_back(first)
            return None, f"no free media ports ({exc})"
        host = self.address if isinstance(self.address, str) else self.address(address)
        bound: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._calls[key] = _Anchored(worker, (first, second), nat, sdp.to_bytes(), bound, host)
        self._send(key, "create", ports=[first, second]).add_done_callback(partial(_settle, bound))
        self._signal(key, "a", address, section)
        sdp.anchor(host, [second])
        return sdp.to_bytes(), None

    def bound(self, key: str) -> asyncio.Future[str | None]:
        """Settles once the worker has bound the call's ports (None) or failed to (the reason);
        until then no SDP that points at them may leave."""
        return self._calls[key].bound

    def withdraw(self, key: str) -> None:
        """The call's ports could not be bound: it is no longer anchored here (its SDP must
        pass through untouched), and its ports are free again."""
        anchored = self._calls.get(key)
        if anchored is None:
            return
        self._send(key, "delete")  # idempotent: clears anything half made
        del self._calls[key]
        for port in anchored.ports:
            anchored.worker.ports.give_back(port)

    def towards_caller(self, key: str, body: bytes) -> bytes:
        """SDP from the destination, rewritten for the caller."""
        return self._rewrite(key, body, "b")

    def towards_callee(self, key: str, body: bytes) -> bytes:
        """SDP from the caller (a re-INVITE or UPDATE), rewritten for the destination."""
        return self._rewrite(key, body, "a")

    def early_answer(self, key: str) -> tuple[bytes, str]:
        """Our own answer to the caller's offer, for early media we play (an announcement):
        the first G.711 codec offered (and telephone-event), at our "a" port. Returns the SDP
        and the codec chosen."""
        anchored = self._calls[key]
        sdp = parse_sdp(anchored.offer)
        section = sdp.media[0]
        mapping = section.rtpmap
        codec = next(pt for pt in section.formats if mapping.get(pt, "").upper() in RECORDABLE)
        keep = {codec} | {
            pt for pt in section.formats if mapping[pt].lower().startswith("telephone-event/")
        }
        section.formats = [pt for pt in section.formats if pt in keep]
        section.lines = [
            (k, v)
            for k, v in section.lines
            if not (k == "a" and v.startswith(("rtpmap:", "fmtp:")) and _pt_of(v) not in keep)
        ]
        family = "IP6" if ":" in anchored.host else "IP4"
        sdp.session = [
            ("o", f"callrouter {anchored.ports[0]} 1 IN {family} {anchored.host}")
            if k == "o"
            else (k, v)
            for k, v in sdp.session
        ]
        sdp.anchor(anchored.host, [anchored.ports[0]])
        return sdp.to_bytes(), mapping[codec].split("/")[0].upper()

    def play(self, key: str, prompt: str, codec: str) -> asyncio.Future[dict[str, Any]]:
        """Play ``prompt`` to the caller; the future settles when it has been sent."""
        return self._calls[key].worker.send_nowait("play", call=key, prompt=prompt, codec=codec)

    def record(self, key: str) -> None:
        """Start recording both legs (the recording's id is the call's)."""
        self._send(key, "record", recording=key)

    def pause(self, key: str) -> None:
        self._send(key, "pause")

    def resume(self, key: str) -> None:
        self._send(key, "resume")

    def release(self, key: str) -> None:
        """The call ended: the worker closes the relay (and finishes the recording)."""
        anchored = self._calls.get(key)
        if anchored is None:
            return
        self._send(key, "delete")
        del self._calls[key]
        for port in anchored.ports:
            anchored.worker.ports.give_back(port)

    def forget(self, keys: list[str]) -> None:
        """A worker died with these calls: their ports are free again."""
        for key in keys:
            anchored = self._calls.pop(key, None)
            if anchored is not None:
                for port in anchored.ports:
                    anchored.worker.ports.give_back(port)

    def _rewrite(self, key: str, body: bytes, sender: str) -> bytes:
        anchored = self._calls.get(key)
        if anchored is None or not body:
            return body
        try:
            sdp = parse_sdp(body)
        except ParseError:
            return body  # the far side will refuse it; we have nothing to anchor
        if len(sdp.media) != 1:
            return body
        section = sdp.media[0]
        address = sdp.media_address(section)
        if address is not None:
            self._signal(key, sender, address, section)
        if sender == "a":
            _limit_to_g711(section)
        first, second = anchored.ports
        # The party on the other side of ``sender`` sends to its own port.
        sdp.anchor(anchored.host, [second if sender == "a" else first])
        return sdp.to_bytes()

    def _signal(self, key: str, leg: str, address: str, section: MediaSection) -> None:
        anchored = self._calls[key]
        rtcp = section.attribute("rtcp")
        rtcp_port = int(rtcp.split()[0]) if rtcp and rtcp.split()[0].isdigit() else None
        self._send(
            key,
            "signal",
            leg=leg,
            rtp=[address, section.port],
            rtcp=[address, rtcp_port] if rtcp_port else None,
            nat=anchored.nat,
        )

    def _send(self, key: str, cmd: str, **fields: Any) -> asyncio.Future[str | None]:
        """Send a command of call ``key``; the future settles with None, or the failure that
        was reported through ``on_failure``."""
        outcome: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        try:
            reply = self._calls[key].worker.send_nowait(cmd, call=key, **fields)
        except Exception as exc:  # noqa: BLE001 - any refusal is a note on the call, not a crash
            reason = f"media worker: {exc}"
            self.on_failure(key, reason)
            outcome.set_result(reason)
            return outcome

        def done(future: asyncio.Future[dict[str, Any]]) -> None:
            reason = None
            if future.cancelled():
                reason = f"media worker: {cmd} cancelled"
            elif future.exception() is not None:
                reason = f"media worker refused {cmd}: {future.exception()}"
                self.on_failure(key, reason)
            if not outcome.done():
                outcome.set_result(reason)

        reply.add_done_callback(done)
        return outcome


def _settle(bound: asyncio.Future[str | None], sent: asyncio.Future[str | None]) -> None:
    if not bound.done():
        bound.set_result(sent.result())


def _limit_to_g711(section: MediaSection) -> bool:
    """Keep only G.711 and telephone-event payload types; False when no G.711 is left."""
    mapping = section.rtpmap
    audio = [pt for pt in section.formats if mapping.get(pt, "").upper() in RECORDABLE]
    if not audio:
        return False
    events = [
        pt for pt in section.formats if mapping.get(pt, "").lower().startswith("telephone-event/")
    ]
    keep = set(audio + events)
    section.formats = [pt for pt in section.formats if pt in keep]
    section.lines = [
        (k, v)
        for k, v in section.lines
        if not (k == "a" and v.startswith(("rtpmap:", "fmtp:")) and _pt_of(v) not in keep)
    ]
    return True


def _pt_of(attribute: str) -> str:
    return attribute.split(":", 1)[1].split(" ", 1)[0]
