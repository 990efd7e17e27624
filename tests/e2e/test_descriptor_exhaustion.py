"""Running out of file descriptors degrades ``callrouter serve`` and it recovers fully (issue 11,
item 7): held HTTP connections exhaust the process's descriptors, and once they are released a
dialplan edit is still reloaded, the API answers and SIGTERM still ends with "stopped".
"""

from __future__ import annotations

import json
import resource
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.serve import ServeProcess

SERVE_FILES = 1024
"""serve's descriptor limit (soft and hard, so it cannot raise it): small enough that the
connections this test can hold surely exhaust it."""
MARGIN = 200
"""Descriptors the test process keeps for itself (pipes, the log reader, urllib)."""


@pytest.fixture
def many_files() -> Iterator[int]:
    """The test process's soft descriptor limit raised to its hard limit, for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def hold_connections(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets connecting (non-blocking) to the server, kept open."""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, port))
        held.append(sock)
    return held


def health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url + "/v1/health", timeout=10) as response:
            body: dict[str, object] = json.load(response)
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


PLAN = """description = "{description}"

[[step]]
dial = ["{{destination}}"]
"""


def test_descriptor_exhaustion_degrades_and_recovers(workdir: Path, many_files: int) -> None:
    dialplans = workdir / "dialplans"
    dialplans.mkdir()
    (dialplans / "office.toml").write_text(PLAN.format(description="before"))
    server = ServeProcess(
        workdir / "data",
        # The HTTP connection limits would refuse these connections before the descriptors run
        # out; lifted so that the exhaustion really happens.
        "--http-max-connections",
        "1000000",
        "--http-max-connections-per-source",
        "1000000",
        "--http-idle-timeout",
        "600",
    )
    resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (SERVE_FILES, SERVE_FILES))
    held: list[socket.socket] = []
    try:
        try:
            server.wait_ready()
            server.wait_for(r"dialplan: loaded office")
            # It says at start that its descriptors cannot cover the connection limits.
            server.wait_for(r"limits: 1024 file descriptors for up to 1004096 connections")
            url = urlsplit(server.http_url)
            assert url.hostname is not None and url.port is not None

            count = min(20_000, many_files - MARGIN)
            started = time.monotonic()
            held = hold_connections(url.hostname, url.port, count)
            print(f"\nheld {count} connections in {time.monotonic() - started:.2f} s")
            # Exhausted: the dialplan watcher cannot list its directory and dies (bounded wait).
            server.wait_for(r"dialplan watcher: died \(OSError: \[Errno 24\] Too many open files")
        finally:
            for sock in held:
                sock.close()
        # Recovered: the watcher was restarted and an edit made now is reloaded...
        server.wait_for(r"dialplan watcher: restarted")
        (dialplans / "office.toml").write_text(PLAN.format(description="after the flood"))
        server.wait_for(r"dialplan: reloaded office")
        # ...and the API answers again (the server sees the closes soon, not at once).
        deadline = time.monotonic() + 60
        while (answer := health(server.http_url)) is None:
            assert time.monotonic() < deadline, "the API never answered after the flood"
            time.sleep(0.1)  # poll interval
        assert answer["status"] == "ok"
        code = server.stop()
    finally:
        if server.process.poll() is None:
            server.kill()  # a failed step above must not leave serve running
    assert code == 0, server.output[-3000:]
    assert server.messages[-1] == "stopped", server.output[-3000:]
    assert not any("error:" in message for message in server.messages[-5:])
