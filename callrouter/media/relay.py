"""The RTP relay: per call, a socket pair (RTP, RTCP) on each leg, packets moved across.

A packet arriving on leg A's socket is checked against A's latching rules and sent out of leg
B's socket to B's destination, so each party sees all media come from the one address it was
given in SDP (symmetric RTP). RTCP and RFC 4733 telephone events are relayed like any packet;
a ``tap`` sees every accepted RTP packet of both legs (the recorder).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from callrouter.media.latching import Address, MediaLeg

LEGS = ("a", "b")
Tap = Callable[[str, bytes, float], None]
"""(leg name, RTP packet, arrival time on the loop clock)"""


class PortsExhausted(Exception):
    """No free RTP port pair in the configured range."""


class PortInUse(Exception):
    """A port pair asked for by number is already held by another call of this worker."""


class PortAllocator:
    """Even RTP ports with the next odd port for RTCP (RFC 3550 §11), from a range."""

    def __init__(self, first: int, last: int) -> None:
        first += first % 2
        self._range = range(first, last, 2)
        # Taken from the right, returned on the left: a released pair is reused last, so late
        # packets of an old call do not land in a new one.
        self._free = deque(reversed(self._range))
        self._used: set[int] = set()

    def take(self) -> int:
        if not self._free:
            raise PortsExhausted(f"all {len(self._used)} RTP port pairs are in use")
        port = self._free.pop()
        self._used.add(port)
        return port

    def claim(self, port: int) -> int:
        """Hold the pair starting at ``port``, chosen by the controller (in the range or not).

        :raises ValueError: ``port`` is odd or not a port.
        :raises PortInUse: another call of this worker holds it.
        """
        if port % 2 or not 0 < port < 65535:
            raise ValueError(f"RTP port {port} is not an even port below 65535")
        if port in self._used:
            raise PortInUse(f"RTP port {port} is in use by another call")
        if port in self._range:
            self._free.remove(port)
        self._used.add(port)
        return port

    def give_back(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            if port in self._range:
                self._free.appendleft(port)

    @property
    def in_use(self) -> int:
        return len(self._used)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, session: RelaySession, leg: str, rtcp: bool) -> None:
        self.session = session
        self.leg = leg
        self.rtcp = rtcp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.session.on_packet(self.leg, self.rtcp, data, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a party that went away: the media timeout handles it.
        self.session.errors += 1


@dataclass
class RelayLeg:
    """One party's side: what it may send from and the sockets we use to talk to it."""

    port: int
    rtp: MediaLeg = field(default_factory=MediaLeg)
    rtcp: MediaLeg = field(default_factory=MediaLeg)
    rtp_receiver: _Receiver | None = None
    rtcp_receiver: _Receiver | None = None


class RelaySession:
    """The relay of one call."""

    def __init__(self, call_id: str, host: str, ports: PortAllocator, clock: Callable[[], float]):
        self.call_id = call_id
        self.host = host
        self._ports = ports
        self._clock = clock
        self.legs: dict[str, RelayLeg] = {}
        self.last_activity = clock()
        self.tap: Tap | None = None
        self.errors = 0

    async def open(self, ports: tuple[int, int] | None = None) -> None:
        """Bind both legs' socket pairs; on failure nothing stays bound.

        :param ports: the RTP ports of legs "a" and "b" (RTCP on each + 1), when the controller
            chose them; else they come from the allocator.
        :raises PortsExhausted: the allocator has no free pair.
        :raises PortInUse: a chosen port is held by another call.
        :raises OSError: a port could not be bound.
        """
        loop = asyncio.get_running_loop()
        try:
            for index, name in enumerate(LEGS):
                port = self._ports.take() if ports is None else self._ports.claim(ports[index])
                leg = RelayLeg(port)
                self.legs[name] = leg
                _, leg.rtp_receiver = await loop.create_datagram_endpoint(
                    partial(_Receiver, self, name, False),
                    local_addr=(self.host, port),
                    family=socket.AF_INET,
                )
                _, leg.rtcp_receiver = await loop.create_datagram_endpoint(
                    partial(_Receiver, self, name, True),
                    local_addr=(self.host, port + 1),
                    family=socket.AF_INET,
                )
        except BaseException:
            self.close()
            raise

    def local(self, leg: str) -> Address:
        """Where party ``leg`` must send its RTP (what goes in the SDP we give it)."""
        return (self.host, self.legs[leg].port)

    def signal(self, leg: str, rtp: Address, rtcp: Address | None, *, nat: bool) -> None:
        """The addresses party ``leg`` put in its SDP (RTCP defaults to RTP port + 1)."""
        relay_leg = self.legs[leg]
        relay_leg.rtp.signal(rtp, nat=nat)
        relay_leg.rtcp.signal(rtcp or (rtp[0], rtp[1] + 1), nat=nat)

    def on_packet(self, leg: str, rtcp: bool, data: bytes, source: Address) -> None:
        here = self.legs[leg]
        media = here.rtcp if rtcp else here.rtp
        if not media.accept(source):
            return
        now = self._clock()
        self.last_activity = now
        there = self.legs["b" if leg == "a" else "a"]
        target = there.rtcp if rtcp else there.rtp
        receiver = there.rtcp_receiver if rtcp else there.rtp_receiver
        destination = target.destination
        if destination is not None and receiver is not None and receiver.transport is not None:
            receiver.transport.sendto(data, destination)
            media.counters.forwarded += 1
        if not rtcp and self.tap is not None:
            self.tap(leg, data, now)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                "received": leg.rtp.counters.received,
                "forwarded": leg.rtp.counters.forwarded,
                "rejected": leg.rtp.counters.rejected + leg.rtcp.counters.rejected,
                "rtcp_forwarded": leg.rtcp.counters.forwarded,
            }
            for name, leg in self.legs.items()
        }

    def close(self) -> None:
        """Close the sockets and give the ports back. Idempotent."""
        for leg in self.legs.values():
            for receiver in (leg.rtp_receiver, leg.rtcp_receiver):
                if receiver is not None and receiver.transport is not None:
                    receiver.transport.close()
            self._ports.give_back(leg.port)
        self.legs.clear()
