"""API throughput: GET /v1/numbers/{id} with a client key vs a bare aiohttp handler.

Both servers run as single processes on loopback and are loaded by wrk (Debian package) in the
same invocation; the ratio is the figure to compare across machines.

    python3 bench/api.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.serve import ServeProcess  # noqa: E402

BARE_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[1], "rb").read()
async def handler(request):
    if request.headers.get("Authorization") != "Bearer " + sys.argv[3]:
        raise web.HTTPUnauthorized()
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/v1/numbers/{number_id}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""


def call(url: str, key: str, data: dict[str, object] | None = None) -> dict[str, object]:
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


def wrk(url: str, key: str, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {key}",
            url,
        ],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")

    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir="/tmp"))
    root.chmod(0o755)
    server = ServeProcess(
        root / "data", "--http-rate-per-second", "1e9", "--http-rate-burst", "1000000000"
    ).wait_ready()
    bare = None
    try:
        base, operator = server.http_url, server.operator_key
        assert operator is not None
        client = call(base + "/v1/clients", operator, {"name": "Bench"})
        key = call(base + "/v1/keys", operator, {"client_id": client["id"]})["secret"]
        number = call(
            base + "/v1/numbers",
            operator,
            {
                "client_id": client["id"],
                "e164": "+441515550001",
                "destination": "sip:reception@pbx.example.com",
                "record": True,
            },
        )
        assert isinstance(key, str)
        path = f"/v1/numbers/{number['id']}"
        body = urllib.request.urlopen(
            urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
        ).read()
        body_file = root / "body.json"
        body_file.write_bytes(body)
        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(body_file), str(port), key])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                bare.wait(0.05) if bare.poll() is not None else None
        wrk(base + path, key, 2, args.connections)  # warm both up
        wrk(f"http://127.0.0.1:{port}{path}", key, 2, args.connections)
        ours, ours_p99 = wrk(base + path, key, args.seconds, args.connections)
        ref, ref_p99 = wrk(f"http://127.0.0.1:{port}{path}", key, args.seconds, args.connections)
        print(
            f"GET {path.rsplit('/', 1)[0]}/{{id}} with a client key, {args.connections} "
            f"connections, {args.seconds} s each, wrk on loopback"
        )
        print(f"  callrouter (auth + tenant-scoped query): {ours:9.0f} req/s   p99 {ours_p99}")
        print(f"  bare aiohttp handler, same JSON:         {ref:9.0f} req/s   p99 {ref_p99}")
        print(f"  ratio callrouter / bare:                 {ours / ref:9.2f}")
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
