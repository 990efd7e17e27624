"""SIP on port 0: the UDP port is the kernel's pick and TCP must take the same number. When a
TCP listener already holds it (another server's HTTP port), the listeners pick again instead
of failing to start.

Proven in a network namespace of its own whose ephemeral range is two ports, 40000-40001, with
a TCP listener on 40000: the kernel hands UDP 40000 about every other time. Each of twelve
starts must come up on 40001 for both; without picking again about half of them fail."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[2]

STARTS = textwrap.dedent(
    """
    import asyncio, socket
    from contextlib import AsyncExitStack
    from callrouter.transport.listeners import open_listeners
    from callrouter.transport.reactor import asyncio_reactor
    from tests.transport.responder import Responder

    async def main():
        reactor = asyncio_reactor(asyncio.get_running_loop())
        holder = socket.socket()
        holder.bind(("127.0.0.1", 40000))
        holder.listen()
        ports = []
        for _ in range(12):
            async with AsyncExitStack() as stack:
                uas = Responder(reactor)
                stack.callback(uas.service.close)
                listening = await open_listeners(reactor, uas.service, "127.0.0.1", 0, stack)
                ports.append(sorted((l.transport, l.port) for l in listening))
        print(ports)

    asyncio.run(main())
    """
)


def test_port_zero_picks_again_when_tcp_holds_the_number() -> None:
    setup = (
        "ip link set lo up && "
        "sysctl -q -w net.ipv4.ip_local_port_range='40000 40001' && "
        f'exec "{sys.executable}" -c "$0"'
    )
    done = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", setup, STARTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str([[("tcp", 40001), ("udp", 40001)]] * 12)
