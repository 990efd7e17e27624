"""The client behind a trusted reverse proxy: X-Forwarded-For read from the right, never past
the first address that is not a trusted proxy, and ignored from anyone else."""

from __future__ import annotations

import pytest

from callrouter.api.forwarded import TrustedProxies
from callrouter.ip_networks import parse_networks

PROXIES = TrustedProxies(parse_networks("127.0.0.1, 10.0.0.0/8, ::1"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),  # nginx on this host
        ("127.0.0.1", None, "127.0.0.1"),  # no header: the proxy itself (a health check)
        ("192.0.2.7", "203.0.113.5", "192.0.2.7"),  # not a proxy of ours: header ignored
        # The client wrote the left part itself; the proxy appended what it saw.
        ("127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        # Two proxies of ours (a load balancer, then nginx): skipped from the right.
        ("127.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),
        # Garbage before any untrusted address: the nearest trusted hop is as far as we see.
        ("127.0.0.1", "not-an-ip, 10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "garbage", "127.0.0.1"),
        # Every hop ours: the leftmost.
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),
        ("::1", "2001:db8::5", "2001:db8::5"),
        ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),  # IPv4 on a dual-stack socket
        ("127.0.0.1", " 203.0.113.5 ", "203.0.113.5"),
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(
    peer: str, forwarded_for: str | None, client: str
) -> None:
    assert PROXIES.client_of(peer, forwarded_for) == client


def test_no_proxies_trusted_by_default() -> None:
    assert TrustedProxies().client_of("127.0.0.1", "203.0.113.5") == "127.0.0.1"
