"""Where to send a request: RFC 3263 §4 server location (NAPTR, then SRV, then A/AAAA) over
twisted.names, with static routes that override DNS for tests and private networks.

The selection rules are plain functions over records; only ``DnsLookup`` talks to the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twisted.names import client, dns
from twisted.names.error import AuthoritativeDomainError, DNSQueryTimeoutError, DomainError

from callrouter.sip.events import Flow
from callrouter.sip.uri import SipUri

__all__ = [
    "DnsLookup",
    "Lookup",
    "Naptr",
    "Resolver",
    "Srv",
    "StaticRoutes",
    "order_naptr",
    "order_srv",
]

DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}
# RFC 3263 §4.1 and RFC 3261 §26.2: NAPTR services and SRV prefixes per transport.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


class Lookup(Protocol):
    """The three DNS questions RFC 3263 asks; empty lists when a name has no such records."""

    def naptr(self, name: str) -> Awaitable[list[Naptr]]: ...

    def srv(self, name: str) -> Awaitable[list[Srv]]: ...

    def addresses(self, name: str) -> Awaitable[list[str]]: ...


def order_naptr(records: Sequence[Naptr], transports: Sequence[str]) -> list[tuple[str, str]]:
    """(transport, SRV name) from NAPTR records we can use, by order then preference (§4.1)."""
    usable = [
        r
        for r in records
        if r.flags.lower() == "s" and NAPTR_SERVICES.get(r.service.upper()) in transports
    ]
    usable.sort(key=lambda r: (r.order, r.preference))
    return [(NAPTR_SERVICES[r.service.upper()], r.replacement) for r in usable]


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782: lowest priority first; within a priority, weighted random order."""
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority and r.target != "."]
        while group:
            total = sum(r.weight for r in group)
            pick = rng.uniform(0, total) if total else 0
            running = 0
            for chosen in group:
                running += chosen.weight
                if running >= pick:
                    break
            ordered.append(chosen)
            group.remove(chosen)
    return ordered


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class StaticRoutes:
    """``host=transport:address:port`` entries that answer before DNS."""

    routes: dict[str, list[Flow]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> StaticRoutes:
        """``"pbx.example.com=udp:10.0.0.5:5060, other=tcp:10.0.0.6:5070"``; ValueError names the
        bad entry."""
        routes: dict[str, list[Flow]] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            host, eq, target = item.partition("=")
            transport, _, rest = target.partition(":")
            address, _, port = rest.rpartition(":")
            if not (eq and transport in DEFAULT_PORT and _is_ip(address) and port.isdigit()):
                raise ValueError(f"not host=transport:address:port: {item!r}")
            routes.setdefault(host.strip().lower(), []).append(
                Flow(transport, address.strip("[]"), int(port))
            )
        return cls(routes)


@dataclass(eq=False)
class Resolver:
    """Turns a SIP URI into the flows to try, in order (§4: transport, then address and port)."""

    lookup: Lookup
    static: StaticRoutes = field(default_factory=StaticRoutes)
    transports: tuple[str, ...] = ("udp", "tcp")
    rng: random.Random = field(default_factory=random.Random)

    async def locate(self, uri: SipUri) -> list[Flow]:
        """The flows to try, in order; each TLS one names ``uri``'s host, the name its peer's
        certificate must carry (RFC 5922: the host looked up, not what DNS answered)."""
        host = (uri.params.get("maddr") or uri.host).lower()
        return [
            replace(flow, server_name=host.strip("[]")) if flow.transport == "tls" else flow
            for flow in await self._flows(uri, host)
        ]

    async def _flows(self, uri: SipUri, host: str) -> list[Flow]:
        fixed = uri.transport or ("tls" if uri.secure else None)
        if host in self.static.routes:
            routes = self.static.routes[host]
            return [f for f in routes if fixed is None or f.transport == fixed]
        if _is_ip(host) or uri.port is not None:
            transport = fixed or "udp"
            port = uri.port or DEFAULT_PORT[transport]
            addresses = [host.strip("[]")] if _is_ip(host) else await self.lookup.addresses(host)
            return [Flow(transport, a, port) for a in addresses]
        allowed = [fixed] if fixed else (["tls"] if uri.secure else list(self.transports))
        plans = order_naptr(await self.lookup.naptr(host), allowed) if not fixed else []
        if not plans:
            plans = [(t, SRV_PREFIX[t] + host) for t in allowed]
        flows: list[Flow] = []
        for transport, name in plans:
            for record in order_srv(await self.lookup.srv(name), self.rng):
                for address in await self.lookup.addresses(record.target):
                    flows.append(Flow(transport, address, record.port))
        if flows:
            return flows
        # §4.2: no SRV records: the host's addresses on the transport's default port.
        transport = fixed or ("tls" if uri.secure else "udp")
        return [
            Flow(transport, a, DEFAULT_PORT[transport]) for a in await self.lookup.addresses(host)
        ]


@dataclass(eq=False)
class DnsLookup:
    """``Lookup`` over twisted.names, against the given servers or the system's resolv.conf."""

    servers: list[tuple[str, int]] | None = None
    timeout: tuple[int, ...] = (1, 3)
    _resolver: Any = None

    def __post_init__(self) -> None:
        if self.servers:
            self._resolver = client.Resolver(servers=self.servers)  # type: ignore[no-untyped-call]
        else:
            self._resolver = client.Resolver(resolv="/etc/resolv.conf")  # type: ignore[no-untyped-call]

    async def _answers(self, query: Callable[..., Any], name: str) -> list[Any]:
        deferred = query(name, timeout=self.timeout)
        try:
            answers, _, _ = await deferred.asFuture(asyncio.get_running_loop())
        except (DomainError, AuthoritativeDomainError, DNSQueryTimeoutError):
            return []  # no such name or record, or no answer: the next step of §4 applies
        return list(answers)

    async def naptr(self, name: str) -> list[Naptr]:
        answers = await self._answers(self._resolver.lookupNamingAuthorityPointer, name)
        return [
            Naptr(
                a.payload.order,
                a.payload.preference,
                a.payload.flags.string.decode(),
                a.payload.service.string.decode(),
                a.payload.replacement.name.decode(),
            )
            for a in answers
            if a.type == dns.NAPTR
        ]

    async def srv(self, name: str) -> list[Srv]:
        answers = await self._answers(self._resolver.lookupService, name)
        return [
            Srv(
                a.payload.priority, a.payload.weight, a.payload.port, a.payload.target.name.decode()
            )
            for a in answers
            if a.type == dns.SRV
        ]

    async def addresses(self, name: str) -> list[str]:
        found = [
            a.payload.dottedQuad()
            for a in await self._answers(self._resolver.lookupAddress, name)
            if a.type == dns.A
        ]
        found += [
            socket.inet_ntop(socket.AF_INET6, a.payload.address)
            for a in await self._answers(self._resolver.lookupIPV6Address, name)
            if a.type == dns.AAAA
        ]
        return found
