"""Run ``callrouter serve`` as a real process and read what it prints, with bounded waits."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

STARTUP_TIMEOUT = 90.0


class ServeProcess:
    """A ``callrouter serve`` child process; stdout lines are collected by a reader thread."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """:param prefix: what runs the command (``ip netns exec NAME`` for another host)."""
        self.data_dir = data_dir
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

    def wait_for(self, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """The first line (from now on, or already read) matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(line):
                return m
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no line matched {pattern!r}; output:\n" + self.output
                ) from None
            if line is None:
                raise AssertionError(f"exited before {pattern!r}; output:\n" + self.output)
            self.lines.append(line)
            if m := regex.search(line):
                return m

    def wait_for_all(self, pattern: str, count: int, timeout: float = STARTUP_TIMEOUT) -> list[str]:
        """The first group of ``count`` lines matching ``pattern``, waiting for the missing ones
        (each wait bounded by ``timeout``)."""
        regex = re.compile(pattern)
        found = [m.group(1) for line in self.lines if (m := regex.search(line))]
        while len(found) < count:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"{len(found)} of {count} lines matched {pattern!r}; output:\n" + self.output
                ) from None
            if line is None:
                raise AssertionError(f"exited before {pattern!r}; output:\n" + self.output)
            self.lines.append(line)
            if m := regex.search(line):
                found.append(m.group(1))
        return found[:count]

    def wait_ready(self) -> ServeProcess:
        self.wait_for(r"callrouter \S+ ready")
        return self

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
            if m := re.search(r"operator key \(shown once, store it now\): (\S+)", line):
                return m.group(1)
        return None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code and drains the rest of the output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.drain()
        return code

    def drain(self) -> None:
        """Collect the remaining output once the process has exited, then close the pipe."""
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
