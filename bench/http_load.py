"""What the HTTP benchmarks share: API calls to set up, a free port, a bare reference server
that is ready, and wrk runs that refuse to report figures made of error responses."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path


def call(url: str, key: str, data: dict[str, object] | None = None) -> dict[str, object]:
    """GET (or POST ``data``) with an API key; the JSON answer."""
    request = urllib.request.Request(url, method="POST" if data else "GET")
    request.add_header("Authorization", f"Bearer {key}")
    if data:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(data).encode()
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.load(response)
        return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_bare(source: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Run the reference server ``source`` (a Python program taking the port as its second
    argument after ``args[0]``) and wait, bounded, until it accepts connections."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", source, args[0], str(port), *args[1:]])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            try:
                process.wait(timeout=0.05)  # a bounded pause that also notices a crash
            except subprocess.TimeoutExpired:
                continue
            raise SystemExit("the reference server exited at start") from None
    process.kill()
    raise SystemExit("the reference server did not start")


def wrk(url: str, seconds: int, connections: int, *options: str) -> tuple[float, str]:
    """(requests/s, p99) of one wrk run; exits if any response was an error."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *options, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} error responses; the figure would be wrong")
    return rps, p99.group(1) if p99 else "?"


def lua_script(path: Path, text: str) -> tuple[str, str]:
    path.write_text(text)
    return "-s", str(path)
