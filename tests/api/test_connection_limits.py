"""The HTTP connection budget: per-source and total limits, released on close."""

from __future__ import annotations

import asyncio

from callrouter.api.connections import ConnectionGuard, HttpLimits
from callrouter.api.forwarded import TrustedProxies
from callrouter.ip_networks import parse_networks


def test_connections_over_the_limits_are_refused_and_places_come_back() -> None:
    guard = ConnectionGuard(HttpLimits(max_connections=3, max_connections_per_source=2))
    for source in ["192.0.2.1", "192.0.2.1", "192.0.2.2"]:
        assert guard.admit(source)
    assert not guard.admit("192.0.2.1")  # its two places are taken
    assert not guard.admit("198.51.100.1")  # three open in all
    guard.close(asyncio.Transport(), "192.0.2.1")
    assert guard.admit("198.51.100.1")
    assert guard.refused == {"per-source limit": 1, "connection limit": 1}


def test_a_trusted_proxy_carries_many_clients_so_only_the_total_holds_it() -> None:
    proxies = TrustedProxies(parse_networks("127.0.0.1"))
    limits = HttpLimits(max_connections=4, max_connections_per_source=1, proxies=proxies)
    guard = ConnectionGuard(limits)
    assert [guard.admit("127.0.0.1") for _ in range(3)] == [True, True, True]
    assert guard.admit("192.0.2.1")
    assert not guard.admit("192.0.2.1")  # anyone else keeps the per-source limit
    assert not guard.admit("127.0.0.1")  # four open in all
    assert guard.refused == {"per-source limit": 1, "connection limit": 1}
