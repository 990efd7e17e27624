"""Lists of IP addresses and networks as settings write them (``127.0.0.1, 10.0.0.0/8, ::1``)."""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

__all__ = ["Network", "parse_networks"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks; a bare address is a network of one.

    :raises ValueError: naming the entry that is neither.
    """
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)
