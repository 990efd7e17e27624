"""API throughput: GET /v1/numbers/{id} with a client key vs a bare aiohttp handler.

Both servers run as single processes on loopback and are loaded by wrk (Debian package) in the
same invocation; the ratio is the figure to compare across machines.

    python3 bench/api.py [--seconds 10] [--connections 32] [--no-access-log]

The server logs JSON, access log included (one line per request), as an operator would run it;
``--no-access-log`` raises the access logger to warning to show what that line costs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import call, start_bare, wrk  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")

    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir="/tmp"))
    root.chmod(0o755)
    quiet = ("--log-levels", "callrouter.access=warning") if args.no_access_log else ()
    server = ServeProcess(
        root / "data", "--http-rate-per-second", "1e9", "--http-rate-burst", "1000000000", *quiet
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
        bare, port = start_bare(BARE_SERVER, str(body_file), key)
        auth = ("-H", f"Authorization: Bearer {key}")
        ref_url = f"http://127.0.0.1:{port}{path}"
        wrk(base + path, 2, args.connections, *auth)  # warm both up
        wrk(ref_url, 2, args.connections, *auth)
        ours, ours_p99 = wrk(base + path, args.seconds, args.connections, *auth)
        ref, ref_p99 = wrk(ref_url, args.seconds, args.connections, *auth)
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
