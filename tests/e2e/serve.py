"""Run ``callrouter serve`` as a real process and read its log, with bounded waits.

The server runs with ``--log-format json``: every line is one JSON object, so tests read events
by their fields (``wait_event("call.ended", call_id=...)``) and match start-up facts against the
``message`` field only (``wait_for``), never against the decoration around it."""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg

from callrouter.store.database import ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from callrouter.store.migrations import migrate
from tests.conftest import world_traversable_tempdir

STARTUP_TIMEOUT = 90.0


@functools.cache
def template_cluster() -> Path:
    """An embedded cluster with the ``callrouter`` database migrated, made once per test run.

    initdb (which fsyncs every file) and the migrations make a first start slower than a later
    one: by 1.1 s (median of 4) on the shared 2-core machine at load 3.5, by 6.9 s at load 12
    to 15. A copy of this cluster takes about 0.2 s, and ``serve`` then starts its own
    embedded PostgreSQL on it as on any later start.
    """
    root = world_traversable_tempdir("callrouter-template-cluster-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    server = EmbeddedPostgres(root / "postgres")
    server.start()  # from this thread: the server's parent-death signal is tied to it

    async def prepare() -> None:
        await ensure_database(server.admin_dsn, DATABASE)
        connection = await asyncpg.connect(server.dsn)
        try:
            await migrate(connection)
        finally:
            await connection.close()

    try:
        # Its own thread and loop: a caller may be inside a running event loop (an async test).
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, prepare()).result()
    finally:
        server.stop()
    return root / "postgres"


def seed_cluster(data_dir: Path) -> None:
    """Put a copy of the template cluster in ``data_dir / "postgres"``, where ``serve`` keeps
    its embedded PostgreSQL (``cp -a``: the files stay owned by the account PostgreSQL runs
    as)."""
    root = data_dir / "postgres"
    root.mkdir(mode=0o700, parents=True)
    subprocess.run(["cp", "-a", str(template_cluster() / "pgdata"), str(root)], check=True)


class ServeProcess:
    """A ``callrouter serve`` child process; stdout lines are collected by a reader thread."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
        first_start: bool = False,
    ) -> None:
        """:param prefix: what runs the command (``ip netns exec NAME`` for another host).
        :param first_start: make the embedded cluster as a newcomer's first start does (initdb,
            migrations); otherwise a new data directory gets a copy of the template cluster.
            Either applies only to a data directory without a cluster, the embedded database
            and no configuration file (``env``) that could point elsewhere.
        """
        self.data_dir = data_dir
        if (
            not first_start
            and env is None
            and "--database-url" not in args
            and not (data_dir / "postgres").exists()
        ):
            seed_cluster(data_dir)
        command = [
            *prefix,
            sys.executable,
            "-m",
            "callrouter",
            "serve",
            "--data-dir",
            str(data_dir),
            "--http-port",
            "0",
            "--sip-port",
            "0",
            "--log-format",
            "json",
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=data_dir.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
                # One media worker unless a test asks for more (a flag or ``env``): the default,
                # one per core, would start dozens per server on a big CI machine.
                "CALLROUTER_MEDIA_WORKERS": "1",
                **(env or {}),
            },
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next(self, timeout: float, waiting_for: str) -> str:
        """The next line read (kept in ``lines``), within ``timeout``."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"nothing matched {waiting_for}; output:\n" + self.output
            ) from None
        if line is None:
            raise AssertionError(f"exited before {waiting_for}; output:\n" + self.output)
        self.lines.append(line)
        return line

    def wait_for(self, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """The first log message (from now on, or already read) matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(message_of(line)):
                return m
        while True:
            line = self._next(timeout, repr(pattern))
            if m := regex.search(message_of(line)):
                return m

    def events(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The log records read so far of ``event`` whose fields have these values."""
        return [r for line in self.lines if _matches(r := record_of(line), event, fields)]

    def wait_events(
        self, event: str, count: int, timeout: float = STARTUP_TIMEOUT, **fields: Any
    ) -> list[dict[str, Any]]:
        """The first ``count`` records of ``event`` with these fields, waiting for the missing
        ones (each wait bounded by ``timeout``)."""
        found = self.events(event, **fields)
        while len(found) < count:
            record = record_of(self._next(timeout, f"{count - len(found)} more {event} {fields}"))
            if _matches(record, event, fields):
                found.append(record)
        return found[:count]

    def wait_event(self, event: str, timeout: float = STARTUP_TIMEOUT, **fields: Any) -> Any:
        """The first log record of ``event`` (already read, or from now on) with these fields."""
        for line in self.lines:
            if _matches(record := record_of(line), event, fields):
                return record
        while True:
            record = record_of(self._next(timeout, f"event {event} {fields}"))
            if _matches(record, event, fields):
                return record

    def wait_for_all(self, pattern: str, count: int, timeout: float = STARTUP_TIMEOUT) -> list[str]:
        """The first group of ``count`` lines matching ``pattern``, waiting for the missing ones
        (each wait bounded by ``timeout``)."""
        regex = re.compile(pattern)
        found = [m.group(1) for line in self.lines if (m := regex.search(message_of(line)))]
        while len(found) < count:
            line = self._next(timeout, f"{count - len(found)} more of {pattern!r}")
            if m := regex.search(message_of(line)):
                found.append(m.group(1))
        return found[:count]

    def wait_ready(self) -> ServeProcess:
        self.wait_for(r"callrouter \S+ ready")
        return self

    @property
    def messages(self) -> list[str]:
        """The log messages read so far, without their time, level and fields."""
        return [message_of(line) for line in self.lines]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def http_url(self) -> str:
        return self.wait_for(r"http: listening on (\S+)").group(1)

    def sip_port(self, transport: str = "udp") -> int:
        return int(
            self.wait_for(rf"sip: listening on sip:\S+:(\d+);transport={transport}").group(1)
        )

    @property
    def operator_key(self) -> str | None:
        for line in self.lines:
            m = re.search(r"operator key \(shown once, store it now\): (\S+)", message_of(line))
            if m:
                return m.group(1)
        return None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code and drains the rest of the output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Say where it is stuck before it goes: a stop that hangs in CI leaves nothing else.
            stacks = _python_stacks(self.process.pid)
            self.process.kill()
            self.drain()
            raise AssertionError(
                f"serve did not stop within {timeout:g} s of SIGTERM; its threads:\n{stacks}\n"
                "its last output:\n" + "\n".join(self.lines[-40:])
            ) from None
        self.drain()
        return code

    def drain(self) -> None:
        """Collect the remaining output once the process has exited, then close the pipe.
        Once is enough: the reader's end mark is read once, and a second drain (``kill`` in a
        ``finally`` after ``stop``) would wait out the whole timeout for it."""
        assert self.process.stdout is not None
        if self.process.stdout.closed:
            return
        while True:
            try:
                line = self._queue.get(timeout=10)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.drain()


def _python_stacks(pid: int) -> str:
    """Every thread's Python stack in process ``pid``, read by py-spy from outside."""
    spy = Path(sys.executable).with_name("py-spy")
    try:
        done = subprocess.run(
            [str(spy), "dump", "--nonblocking", "--pid", str(pid)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(py-spy could not read it: {exc})"
    return done.stdout + done.stderr


def record_of(line: str) -> dict[str, Any]:
    """A log line as its JSON object; a line that is not one (a child process's stray output)
    as ``{"message": line}``."""
    try:
        record = json.loads(line)
    except ValueError:
        return {"message": line}
    return record if isinstance(record, dict) else {"message": line}


def message_of(line: str) -> str:
    return str(record_of(line).get("message", ""))


def _matches(record: dict[str, Any], event: str, fields: dict[str, Any]) -> bool:
    return record.get("event") == event and all(record.get(k) == v for k, v in fields.items())
