"""The HTTP connection budget: per-source and total limits, released on close, and deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from callrouter.api.access_log import AccessLog
from callrouter.api.connections import ConnectionGuard, GuardedSite, HttpLimits
from callrouter.api.forwarded import TrustedProxies
from callrouter.api.middleware import ApiMiddleware
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


@asynccontextmanager
async def _guarded_server(limits: HttpLimits) -> AsyncIterator[tuple[int, ConnectionGuard]]:
    """A real aiohttp server on loopback with every connection behind a guard and its front
    door (what marks a request as being served)."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    guard = ConnectionGuard(limits)
    app = web.Application(middlewares=[ApiMiddleware(AccessLog(None), guard).middleware])
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard, backlog=16, keepalive_timeout=60.0)
    await site.start()
    try:
        yield runner.addresses[0][1], guard
    finally:
        await runner.cleanup()


REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def _answered(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head + await asyncio.wait_for(reader.readexactly(len("hello")), 5)


async def test_requests_move_the_deadline_and_a_stalled_one_is_still_cut_off() -> None:
    # The deadline is a time checked by a timer that is not moved per request: a connection
    # busy for longer than either timeout keeps being served, and once it stalls in a
    # request's headers or idles it is closed by the deadline of that moment.
    limits = HttpLimits(idle_timeout=0.4, header_timeout=0.4)
    async with _guarded_server(limits) as (port, guard):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        served = 0
        while loop.time() - started < 1.2:  # three times either timeout, in requests
            writer.write(REQUEST)
            assert (await _answered(reader)).endswith(b"hello")
            served += 1
            await asyncio.sleep(0.05)  # a pause below both timeouts: pacing, not waiting
        assert served >= 3
        stalled_at = loop.time()
        writer.write(b"GET / HTTP/1.1\r\nHost: te")  # then nothing more
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, without an answer
        assert loop.time() - stalled_at >= 0.4
        writer.close()
        idle, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(REQUEST)
        await _answered(idle)
        assert await asyncio.wait_for(idle.read(), 10) == b""  # idle past its timeout
        idle_writer.close()
        for _ in range(100):  # bounded: the guard forgets both once their close is seen
            if not guard.open:
                break
            await asyncio.sleep(0.01)
        assert not guard.open and not guard.by_source
