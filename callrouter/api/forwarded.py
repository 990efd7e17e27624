"""The client's address and scheme behind a reverse proxy (``[http] trusted_proxies``).

Behind nginx every connection comes from the proxy, so without this every per-address rule
(the swap script's rate limit, the failed-authentication and console login limits, the
per-source connection cap) would treat all visitors as one, and a visit would store the
proxy's address. A request from a trusted proxy is taken to come from the address its
``X-Forwarded-For`` names: the list is read from the right (the proxy nearest to us appends
last), trusted hops are skipped, and the first other address is the client. Anything to its
left was written by the client itself and could be forged, so it is never read. A request
from any other peer keeps its peer address and its headers are ignored.

aiohttp-remotes has X-Forwarded middlewares, but its strict one refuses every request that did
not come through the proxy (a Prometheus scrape on a private address, a health check) and its
filtered one believes the header from any peer; neither is this rule.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import hdrs, web

from callrouter.ip_networks import Network

__all__ = ["TrustedProxies"]

_SCHEMES = frozenset({"http", "https"})


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 peer on a dual-stack socket reads as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed."""

    networks: tuple[Network, ...] = ()

    def trusts(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and self._ours(address)

    def client_of(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address of a request from ``peer`` carrying ``forwarded_for``."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        return self._behind(peer, forwarded_for)

    def _ours(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)

    def _behind(self, proxy: str, forwarded_for: str) -> str:
        """The client behind ``proxy``, a peer already found trusted."""
        client = proxy
        for hop in reversed(forwarded_for.split(",")):
            address = _address(hop)
            if address is None:
                # Written by something we do not trust to write it: the hop nearest to it
                # that we do trust is as far as we can see.
                return client
            client = str(address)
            if not self._ours(address):
                return client
        return client  # every hop is a proxy of ours: the leftmost is the client

    def resolve(self, request: web.Request) -> web.Request:
        """The request as its client made it: from a trusted proxy, a copy with the client's
        address (and scheme) its headers name; from anyone else, the request itself."""
        peer = request.remote or ""
        if not self.trusts(peer):
            return request
        # Several headers read as one list in order (RFC 9110 §5.3): a proxy that adds its own
        # header after the client's must not leave the client's one to be read.
        hops = ",".join(request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
        remote = self._behind(peer, hops) if hops else peer
        scheme = request.headers.get(hdrs.X_FORWARDED_PROTO, "").strip().lower()
        if scheme in _SCHEMES:
            return request.clone(remote=remote, scheme=scheme)
        return request.clone(remote=remote)
