"""The media worker process: RTP relays for recorded calls, controlled over a Unix socket.

It runs apart from the signalling process so that audio work never stalls SIP or the API. The
control protocol is one JSON object per line, in the spirit of rtpengine's ng protocol: every
command is idempotent and keyed by the call, so the controller may safely repeat one after a
timeout.

    -> {"id": 1, "cmd": "create", "call": "c1"}
    <- {"id": 1, "ok": true, "a": ["127.0.0.1", 30000], "b": ["127.0.0.1", 30002]}
    -> {"id": 2, "cmd": "signal", "call": "c1", "leg": "a", "rtp": ["192.0.2.5", 4000],
        "rtcp": null, "nat": false}
    -> {"id": 3, "cmd": "delete", "call": "c1"}
    <- {"id": 3, "ok": true, "stats": {...}}
    <- {"event": "media_timeout", "call": "c1"}          (unsolicited)

Run by ``callrouter serve``; by hand: ``python -m callrouter.media.worker --control /tmp/m.sock``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from callrouter.media.relay import LEGS, PortAllocator, PortsExhausted, RelaySession

log = logging.getLogger(__name__)

Command = dict[str, Any]


class CommandError(Exception):
    """A command the worker cannot carry out; the message goes back to the controller."""


class MediaWorker:
    """The relays of one worker and the commands that manage them."""

    def __init__(self, host: str, ports: PortAllocator, media_timeout: float) -> None:
        self.host = host
        self.ports = ports
        self.media_timeout = media_timeout
        self.sessions: dict[str, RelaySession] = {}
        self.emit: Callable[[Command], None] = lambda _event: None
        self._handlers: dict[str, Callable[[Command], Awaitable[Command]]] = {
            "ping": self._ping,
            "create": self._create,
            "signal": self._signal,
            "query": self._query,
            "delete": self._delete,
        }

    async def handle(self, command: Command) -> Command:
        handler = self._handlers.get(str(command.get("cmd")))
        if handler is None:
            raise CommandError(f"unknown command {command.get('cmd')!r}")
        return await handler(command)

    def _session(self, command: Command) -> RelaySession:
        session = self.sessions.get(str(command.get("call")))
        if session is None:
            raise CommandError(f"no relay for call {command.get('call')!r}")
        return session

    async def _ping(self, _command: Command) -> Command:
        return {"sessions": len(self.sessions), "ports_in_use": self.ports.in_use}

    async def _create(self, command: Command) -> Command:
        call = str(command["call"])
        session = self.sessions.get(call)
        if session is None:
            loop = asyncio.get_running_loop()
            session = RelaySession(call, self.host, self.ports, loop.time)
            try:
                await session.open()
            except PortsExhausted as exc:
                raise CommandError(str(exc)) from None
            self.sessions[call] = session
        return {leg: list(session.local(leg)) for leg in LEGS}

    async def _signal(self, command: Command) -> Command:
        session = self._session(command)
        leg = command.get("leg")
        if leg not in LEGS:
            raise CommandError(f"leg must be one of {LEGS}")
        rtp = _address(command.get("rtp"))
        if rtp is None:
            raise CommandError("rtp address missing")
        session.signal(leg, rtp, _address(command.get("rtcp")), nat=bool(command.get("nat")))
        return {}

    async def _query(self, command: Command) -> Command:
        return {"stats": self._session(command).stats()}

    async def _delete(self, command: Command) -> Command:
        session = self.sessions.pop(str(command.get("call")), None)
        if session is None:
            return {"stats": None}
        stats = session.stats()
        session.close()
        return {"stats": stats}

    def check_timeouts(self, now: float) -> None:
        """Report calls whose media stopped; the controller decides to end them."""
        for call, session in list(self.sessions.items()):
            if now - session.last_activity > self.media_timeout:
                session.last_activity = now  # report once per timeout period
                self.emit({"event": "media_timeout", "call": call})

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


def _address(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and 0 <= value[1] <= 65535
    ):
        return (value[0], value[1])
    raise CommandError(f"bad address {value!r}: expected [ip, port]")


async def serve_control(worker: MediaWorker, path: Path, stop: asyncio.Event) -> None:
    """Accept the controller's connection and answer its commands until ``stop``."""
    writers: set[asyncio.StreamWriter] = set()

    def emit(event: Command) -> None:
        line = json.dumps(event).encode() + b"\n"
        for writer in writers:
            writer.write(line)

    worker.emit = emit

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while line := await reader.readline():
                reply: Command
                command: object = None
                try:
                    command = json.loads(line)
                    if not isinstance(command, dict):
                        raise CommandError("a command is a JSON object")
                    reply = {"id": command.get("id"), "ok": True, **await worker.handle(command)}
                except (CommandError, ValueError, KeyError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                    if isinstance(command, dict):
                        reply["id"] = command.get("id")
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writers.discard(writer)
            writer.close()

    _remove_socket(path)
    server = await asyncio.start_unix_server(client, path=str(path))
    os.chmod(path, 0o600)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)  # the supervisor waits for this line
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                worker.check_timeouts(loop.time())
    finally:
        server.close()
        await server.wait_closed()
        worker.close()
        _remove_socket(path)


def _remove_socket(path: Path) -> None:
    path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="callrouter media worker")
    parser.add_argument("--control", type=Path, required=True, help="Unix socket to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address RTP sockets bind to")
    parser.add_argument("--ports", default="30000-39999", help="RTP port range FIRST-LAST")
    parser.add_argument("--media-timeout", type=float, default=60.0)
    args = parser.parse_args()
    first, _, last = args.ports.partition("-")
    worker = MediaWorker(args.host, PortAllocator(int(first), int(last)), args.media_timeout)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_control(worker, args.control, stop)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(run())


if __name__ == "__main__":
    main()
