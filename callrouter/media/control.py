"""The signalling process's side of a media worker: start it, command it, restart it if it dies.

Commands are written at once, in the order they are issued (:meth:`send_nowait` from
synchronous code, :meth:`command` to await the reply); each reply resolves its command's future
within a timeout. Unsolicited events (``media_timeout``, ``recording_ready``,
``recording_failed``) go to ``on_event``. A worker that dies is restarted (at once after a run
of a minute or more, else after a pause that doubles up to 30 s) and every call it
carried is reported through ``on_event`` as ``{"event": "worker_lost", "calls": [...]}`` so the
B2BUA can note it on the call records; once the new worker runs, ``{"event":
"worker_restarted"}`` tells the controller to send it ``recover`` to finalise what the dead one
was recording (this class does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callrouter.media.recording import RecordingSettings

__all__ = ["Event", "MediaError", "MediaWorkerProcess", "RecordingSettings"]

log = logging.getLogger(__name__)

Event = dict[str, Any]
_LINE_LIMIT = 1 << 24  # a recover reply carries every recording's peaks
# Restarts: at once after a worker that ran this long, else after a pause doubling up to a
# ceiling (as callrouter.supervisor does for the server's background jobs).
_HEALTHY_AFTER = 60.0
_FIRST_DELAY = 0.5
_MAX_DELAY = 30.0


class MediaError(Exception):
    """The worker refused a command, did not answer, or is not running."""


class _Pending:
    """A command awaiting its reply."""

    def __init__(self, cmd: str, call: str | None, future: asyncio.Future[Event]) -> None:
        self.cmd = cmd
        self.call = call
        self.future = future
        self.timer: asyncio.TimerHandle | None = None


class MediaWorkerProcess:
    """One supervised ``callrouter.media.worker`` process.

    :param control: the Unix socket path the worker listens on.
    :param host: the address its RTP sockets bind to (and that goes into SDP).
    :param ports: "FIRST-LAST" RTP port range.
    :param on_event: receives unsolicited events (media timeouts, recordings, a lost worker).
    :param command_timeout: seconds a command waits for its reply (and, with :meth:`command`,
        for a restarting worker).
    :param recording: where and how the worker records; None for a worker that does not.
    :param recover_timeout: seconds a ``recover`` may take (it finalises whole recordings).
    :param user: the account a worker started by root switches to before it touches any
        file or socket.
    :param log: the server's log format and level, for the worker's own lines.
    :param name: how logs name this worker (its number among the server's workers).
    :param prompts: the operators' prompts directory (``<name>.wav``) that ``play`` may name.
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
        recording: RecordingSettings | None = None,
        recover_timeout: float = 600.0,
        user: str | None = None,
        log: tuple[str, str] = ("text", "info"),
        name: str = "0",
        prompts: Path | None = None,
    ) -> None:
        self.control = control
        self.host = host
        self.ports = ports
        self.media_timeout = media_timeout
        self.on_event = on_event
        self.command_timeout = command_timeout
        self.recording = recording
        self.recover_timeout = recover_timeout
        self.user = user
        self.log = log
        self.name = name
        self.prompts = prompts
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._calls: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._running = asyncio.Event()
        self._answering = True
        self.restarts = 0
        self._started_at = 0.0
        self._delay = 0.0

    def arguments(self) -> list[str]:
        """The worker's command line after ``python``."""
        arguments = [
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
            "--parent-pid",
            str(os.getpid()),
            "--log-format",
            self.log[0],
            "--log-level",
            self.log[1],
        ]
        if self.user is not None:
            arguments += ["--user", self.user]
        if self.recording is not None:
            arguments += self.recording.arguments()
        if self.prompts is not None:
            arguments += ["--prompts-dir", str(self.prompts)]
        return arguments

    async def start(self) -> None:
        self._started_at = asyncio.get_running_loop().time()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, *self.arguments(), stdout=asyncio.subprocess.PIPE
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=30)
        if line.strip() != b"ready":
            raise MediaError(f"media worker did not start: {line!r}")
        reader, self._writer = await asyncio.open_unix_connection(
            str(self.control), limit=_LINE_LIMIT
        )
        # Each connection has its own pending commands: the old one's end fails only its own.
        self._pending = {}
        self._tasks = [
            asyncio.create_task(self._read_replies(reader, self._pending), name="media-replies"),
            asyncio.create_task(self._watch(self._process), name="media-supervisor"),
        ]
        self._answering = True
        self._running.set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """Started and connected (False while it is being restarted after a crash)."""
        return self._running.is_set()

    @property
    def answering(self) -> bool:
        """False from a command that went unanswered until the next reply (a hung worker)."""
        return self._answering

    def send_nowait(self, cmd: str, /, **fields: Any) -> asyncio.Future[Event]:
        """Write a command now and return a future for its reply.

        Commands sent one after another reach the worker in that order. The future fails with
        :class:`MediaError` when the worker refuses the command, does not answer within
        ``command_timeout`` (``recover_timeout`` for ``recover``), dies, or is not running
        (being restarted) now.
        """
        return self._send(cmd, fields, self._timeout(cmd))

    async def command(self, cmd: str, /, **fields: Any) -> Event:
        """Send a command and return its reply; raises MediaError on refusal or silence.

        During a restart the command first waits (within ``command_timeout``) for the new
        worker. The reply is awaited as in :meth:`send_nowait`.
        """
        if not self._running.is_set():
            try:
                await asyncio.wait_for(self._running.wait(), self.command_timeout)
            except TimeoutError:
                raise MediaError("media worker is not running") from None
        return await self._send(cmd, fields, self._timeout(cmd))

    def _timeout(self, cmd: str) -> float:
        return self.recover_timeout if cmd == "recover" else self.command_timeout

    def _send(self, cmd: str, fields: dict[str, Any], timeout: float) -> asyncio.Future[Event]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Event] = loop.create_future()
        writer = self._writer
        if not self._running.is_set() or writer is None or writer.is_closing():
            future.set_exception(MediaError("media worker is not running"))
            return future
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "cmd": cmd, **fields}).encode() + b"\n"
        call = fields.get("call")
        pending = self._pending
        entry = pending[request_id] = _Pending(cmd, None if call is None else str(call), future)
        entry.timer = loop.call_later(timeout, self._expire, pending, request_id)
        future.add_done_callback(lambda _future: _forget(pending, request_id))
        writer.write(line)
        return future

    def _expire(self, pending: dict[int, _Pending], request_id: int) -> None:
        entry = pending.get(request_id)
        if entry is not None and not entry.future.done():
            self._answering = False
            entry.future.set_exception(MediaError(f"media worker did not answer {entry.cmd}"))

    def _answered(self, entry: _Pending, reply: Event) -> None:
        self._answering = True
        if entry.future.done():
            return
        if not reply.get("ok"):
            entry.future.set_exception(MediaError(str(reply.get("error"))))
            return
        if entry.cmd == "create" and entry.call:
            self._calls.add(entry.call)
        elif entry.cmd == "delete" and entry.call:
            self._calls.discard(entry.call)
        entry.future.set_result(reply)

    async def _read_replies(
        self, reader: asyncio.StreamReader, pending: dict[int, _Pending]
    ) -> None:
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if "event" in message:
                    self.on_event(message)
                elif (entry := pending.get(message.get("id"))) is not None:
                    self._answered(entry, message)
        finally:
            for entry in list(pending.values()):
                if not entry.future.done():
                    entry.future.set_exception(MediaError("media worker connection closed"))

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping:
            return
        self._running.clear()
        lost, self._calls = sorted(self._calls), set()
        log.error(
            "media worker %s exited with %s; restarting (%d calls lost)", self.name, code, len(lost)
        )
        self.on_event({"event": "worker_lost", "calls": lost, "exit_code": code})
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        await self._restart()

    async def _restart(self) -> None:
        """Start a new worker: at once after one that ran a while, else after a pause that
        doubles (a worker that dies at once, again and again, does not spin the machine)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._started_at >= _HEALTHY_AFTER:
            self._delay = 0.0
        while not self._stopping:
            if self._delay:
                log.warning("media worker %s: restarting in %g s", self.name, self._delay)
                await asyncio.sleep(self._delay)
            self._delay = min(max(self._delay * 2, _FIRST_DELAY), _MAX_DELAY)
            self.restarts += 1
            try:
                await self.start()
            except (MediaError, OSError, TimeoutError) as exc:
                log.error("media worker %s did not start: %s", self.name, exc)
                await self._end(self._process)
                continue
            log.warning("media worker %s restarted: pid %s", self.name, self.pid)
            self.on_event({"event": "worker_restarted", "pid": self.pid})
            return

    async def stop(self) -> None:
        self._stopping = True
        self._running.clear()
        if self._writer is not None:
            self._writer.close()
        await self._end(self._process)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _end(process: asyncio.subprocess.Process | None) -> None:
        """Ask a worker process to stop, and kill it if it does not within 10 s."""
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


def _forget(pending: dict[int, _Pending], request_id: int) -> None:
    entry = pending.pop(request_id, None)
    if entry is not None and entry.timer is not None:
        entry.timer.cancel()
