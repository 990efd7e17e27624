"""Webhook destinations on the public internet only, checked on the very addresses connected to.

A client registers a webhook URL and the server calls it: without a check, a client could make
the server reach its own loopback, the cloud metadata address or the private network. Checking
the name's addresses first and then letting the HTTP client resolve it again to connect leaves
a gap (DNS rebinding: a public answer for the check, a private one for the connection). Here the
HTTP client's own resolver drops every address that is not global, so the addresses checked are
the ones connected to. An address written in the URL itself is never resolved, so it is
checked apart (``check_literal``).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

__all__ = ["PublicOnlyResolver", "check_literal"]


class PublicOnlyResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver) and keeps the global addresses only."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if ipaddress.ip_address(r["host"]).is_global]
        if not public:
            addresses = ", ".join(sorted({r["host"] for r in found}))
            # With an errno, aiohttp's connection error shows the message (its strerror).
            raise OSError(errno.EACCES, f"{host} resolves to no public address ({addresses})")
        return public

    async def close(self) -> None:
        await self._inner.close()


def check_literal(url: str) -> None:
    """:raises ValueError: the URL's host is an IP address that is not global."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not address.is_global:
        raise ValueError(f"{host} is not a public address")
