"""The address callrouter writes into SIP (Via, Contact, From host, Call-ID) and SDP for a peer
to reach it, which is not always the address it listens on.

Bound to a concrete address, that address is written. Behind NAT the operator names the public
address (``advertise``, as Kamailio's ``advertise`` and FreeSWITCH's ``ext-sip-ip`` do). Bound to
0.0.0.0 or :: with nothing advertised, the address of the interface the kernel routes towards the
peer is written: a connected UDP socket's ``getsockname`` (connecting a datagram socket sends
nothing), cached per destination. A wildcard is never written: a peer cannot send to it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from callrouter.sip.events import Flow

__all__ = [
    "Advertisement",
    "LocalAddresses",
    "RouteSource",
    "is_wildcard",
    "media_address",
    "media_advertisement",
    "parse_advertise",
]

_DISCARD_PORT = 9  # any port does: connect() on a datagram socket only picks the route


def is_wildcard(host: str) -> bool:
    """True for an address that means "every interface" (0.0.0.0, ::, or nothing)."""
    text = host.strip().strip("[]")
    try:
        return not text or ipaddress.ip_address(text).is_unspecified
    except ValueError:
        return False  # a host name


def parse_advertise(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port or None).

    :raises ValueError: saying what is wrong (empty, a wildcard, a bad port).
    """
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not host, host:port or [IPv6]:port")
        host, port_text = inside, (rest[1:] if rest else None)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host or any(c.isspace() or c in "<>;@/[]" for c in host):
        raise ValueError(f"{text!r} is not host, host:port or [IPv6]:port")
    if is_wildcard(host):
        raise ValueError(f"{text!r} is a wildcard; advertise an address peers can reach")
    return host, (None if port_text is None else _port(port_text, text))


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port must be 1-65535")
    return int(text)


def media_address(text: str) -> str:
    """A ``[media] advertise`` value: an IP address (SDP peers do not resolve names).

    :raises ValueError: when it is not an IP address, or is a wildcard.
    """
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if address.is_unspecified:
        raise ValueError(f"{text!r} is a wildcard; advertise an address peers can reach")
    return str(address)


@dataclass(eq=False)
class RouteSource:
    """The local address the kernel uses to reach a host, cached per destination.

    :param limit: destinations remembered; the oldest goes first beyond it.
    """

    limit: int = 4096
    _cache: dict[str, str] = field(default_factory=dict)

    def towards(self, host: str) -> str:
        cached = self._cache.get(host)
        if cached is not None:
            return cached
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((host, _DISCARD_PORT))
                local = str(probe.getsockname()[0])
            except OSError:
                # No route (or not an address): nothing reaches the peer anyway; name loopback
                # rather than a wildcard, and do not remember it (a route may appear).
                return "::1" if family == socket.AF_INET6 else "127.0.0.1"
        if len(self._cache) >= self.limit:
            del self._cache[next(iter(self._cache))]
        self._cache[host] = local
        return local


@dataclass(frozen=True, slots=True)
class Advertisement:
    """What one listener writes as its address."""

    host: str | None
    """The host to write; None: the interface address towards each peer (bound to a wildcard)."""
    port: int

    @staticmethod
    def of(bind_host: str, bound_port: int, advertise: str | None) -> Advertisement:
        """The configured ``advertise`` (its port, else the bound one), else a concrete bind
        address, else None for "ask the route"."""
        if advertise:
            host, port = parse_advertise(advertise)
            return Advertisement(host, port or bound_port)
        return Advertisement(None if is_wildcard(bind_host) else bind_host, bound_port)


@dataclass(eq=False)
class LocalAddresses:
    """Per transport, the address written for a peer; an input the SIP core is given."""

    listeners: dict[str, Advertisement] = field(default_factory=dict)
    route: Callable[[str], str] = field(default_factory=lambda: RouteSource().towards)

    def host(self, flow: Flow) -> str:
        """The host (IPv6 in brackets) a peer at ``flow`` is told to reach us at."""
        listener = self.listeners.get(flow.transport) or self.listeners.get("udp")
        if listener is None:
            return "invalid"
        host = listener.host or self.route(flow.host)
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def sent_by(self, flow: Flow) -> str:
        """host:port for Via sent-by and Contact."""
        listener = self.listeners.get(flow.transport) or self.listeners.get("udp")
        if listener is None:
            return "invalid"
        return f"{self.host(flow)}:{listener.port}"


def media_advertisement(
    bind_host: str, advertise: str | None, sip_advertise: str | None
) -> str | Callable[[str], str]:
    """What SDP names for the relay: ``[media] advertise``; else a concrete bind address; else
    the host of ``[sip] advertise`` when it is an IP address (one public address for both);
    else, per call, the interface address towards the caller's media.

    :raises ValueError: when ``advertise`` is not an IP address.
    """
    if advertise:
        return media_address(advertise)
    if not is_wildcard(bind_host):
        return bind_host
    if sip_advertise:
        try:
            return media_address(parse_advertise(sip_advertise)[0])
        except ValueError:
            pass  # a host name: SDP needs an address
    return RouteSource().towards
