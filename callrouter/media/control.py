"""The signalling process's side of a media worker: start it, command it, restart it if it dies.

Commands wait for their reply with a timeout; a worker that dies is restarted and every call it
carried is reported through ``on_event`` as ``{"event": "worker_lost", "calls": [...]}`` so the
B2BUA can note it on the call records.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Event = dict[str, Any]


class MediaError(Exception):
    """The worker refused a command, did not answer, or is not running."""


class MediaWorkerProcess:
    """One supervised ``callrouter.media.worker`` process.

    :param control: the Unix socket path the worker listens on.
    :param host: the address its RTP sockets bind to (and that goes into SDP).
    :param ports: "FIRST-LAST" RTP port range.
    :param on_event: receives unsolicited events (media timeouts, a lost worker).
    """

    def __init__(
        self,
        control: Path,
        host: str,
        ports: str,
        *,
        media_timeout: float = 60.0,
        on_event: Callable[[Event], None] = lambda _event: None,
        command_timeout: float = 5.0,
    ) -> None:
        self.control = control
        self.host = host
        self.ports = ports
        self.media_timeout = media_timeout
        self.on_event = on_event
        self.command_timeout = command_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Event]] = {}
        self._ids = itertools.count(1)
        self._calls: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._running = asyncio.Event()
        self.restarts = 0

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callrouter.media.worker",
            "--control",
            str(self.control),
            "--host",
            self.host,
            "--ports",
            self.ports,
            "--media-timeout",
            str(self.media_timeout),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=30)
        if line.strip() != b"ready":
            raise MediaError(f"media worker did not start: {line!r}")
        self._reader, self._writer = await asyncio.open_unix_connection(str(self.control))
        self._tasks = [
            asyncio.create_task(self._read_replies(), name="media-replies"),
            asyncio.create_task(self._watch(self._process), name="media-supervisor"),
        ]
        self._running.set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def command(self, cmd: str, **fields: Any) -> Event:
        """Send a command and return its reply; raises MediaError on refusal or silence.

        During a restart the command waits (within its timeout) for the new worker.
        """
        try:
            await asyncio.wait_for(self._running.wait(), self.command_timeout)
        except TimeoutError:
            raise MediaError("media worker is not running") from None
        assert self._writer is not None
        request_id = next(self._ids)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(json.dumps({"id": request_id, "cmd": cmd, **fields}).encode() + b"\n")
        try:
            reply = await asyncio.wait_for(future, self.command_timeout)
        except TimeoutError:
            raise MediaError(f"media worker did not answer {cmd}") from None
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            raise MediaError(str(reply.get("error")))
        call = fields.get("call")
        if cmd == "create" and call:
            self._calls.add(str(call))
        elif cmd == "delete" and call:
            self._calls.discard(str(call))
        return reply

    async def _read_replies(self) -> None:
        assert self._reader is not None
        while line := await self._reader.readline():
            message = json.loads(line)
            if "event" in message:
                self.on_event(message)
            elif (future := self._pending.get(message.get("id"))) and not future.done():
                future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MediaError("media worker connection closed"))

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping:
            return
        self._running.clear()
        lost, self._calls = sorted(self._calls), set()
        log.error("media worker exited with %s; restarting (%d calls lost)", code, len(lost))
        self.on_event({"event": "worker_lost", "calls": lost, "exit_code": code})
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.restarts += 1
        await self.start()

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            self._writer.close()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), timeout=10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
