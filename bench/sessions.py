"""Dynamic number insertion: sessions created per second over HTTP against a bare aiohttp
handler (same run), the pool's lease+lookup cost per operation, and memory per live session
with 1,000,000 sessions.

    python3 bench/sessions.py [--seconds 10] [--connections 32] [--sessions 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import call, lua_script, start_bare, wrk  # noqa: E402
from callrouter.routing.pool import NumberPool  # noqa: E402
from callrouter.routing.sessions import LivePool, Sessions  # noqa: E402
from callrouter.store.pools import Pool  # noqa: E402
from tests.e2e.serve import ServeProcess  # noqa: E402

BARE_SERVER = """
import sys, json, uuid
from aiohttp import web
body = open(sys.argv[1], "rb").read()
async def handler(request):
    await request.json()
    return web.Response(body=body, status=201, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/sessions", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""

WRK_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://www.acme.example"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format(
    '{"pool_key": "%s", "visitor_id": "v%d-%d", "page_url": '
    .. '"https://www.acme.example/?utm_source=google&utm_campaign=bench", "referrer": null}',
    "POOL_KEY", math.random(1, 1000000000), counter))
end
"""


def http_figures(seconds: int, connections: int) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir="/tmp"))
    root.chmod(0o755)
    server = ServeProcess(
        root / "data", "--http-public-rate-per-second", "1e9", "--http-public-rate-burst", "1e9"
    ).wait_ready()
    bare = None
    try:
        base, operator = server.http_url, server.operator_key
        assert operator is not None
        client = call(base + "/v1/clients", operator, {"name": "Bench"})
        pool = call(
            base + "/v1/pools",
            operator,
            {
                "client_id": client["id"],
                "name": "site",
                "allowed_origins": ["https://www.acme.example"],
                "target_numbers": ["+441515550999"],
            },
        )
        for i in range(100):
            call(
                base + "/v1/numbers",
                operator,
                {"client_id": client["id"], "e164": f"+4415155{i:05d}", "pool_id": pool["id"]},
            )
        server.wait_for(r"sessions: pool \S+ loaded with 100 number")
        script = lua_script(
            root / "post.lua", WRK_POST.replace("POOL_KEY", str(pool["public_key"]))
        )
        sample = subprocess.run(
            [
                "curl",
                "-s",
                "-X",
                "POST",
                base + "/v1/sessions",
                "-H",
                "Content-Type: application/json",
                "-H",
                "Origin: https://www.acme.example",
                "-d",
                json.dumps(
                    {"pool_key": pool["public_key"], "page_url": "https://www.acme.example/"}
                ),
            ],
            capture_output=True,
            check=True,
        ).stdout
        body_file = root / "body.json"
        body_file.write_bytes(sample)
        bare, port = start_bare(BARE_SERVER, str(body_file))
        ref_url = f"http://127.0.0.1:{port}/v1/sessions"
        wrk(base + "/v1/sessions", 2, connections, *script)
        wrk(ref_url, 2, connections, *script)
        ours, ours_p99 = wrk(base + "/v1/sessions", seconds, connections, *script)
        ref, ref_p99 = wrk(ref_url, seconds, connections, *script)
        print(f"POST /v1/sessions, {connections} connections, {seconds} s each, wrk on loopback")
        print(f"  callrouter (origin check, lease, session): {ours:9.0f} req/s   p99 {ours_p99}")
        print(f"  bare aiohttp handler, same JSON:           {ref:9.0f} req/s   p99 {ref_p99}")
        print(f"  ratio callrouter / bare:                   {ours / ref:9.2f}")
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def pool_figures() -> None:
    numbers = [f"+4415155{i:05d}" for i in range(10_000)]
    pool = NumberPool(numbers, hold=1800.0, grace=1800.0)
    sessions = [uuid.uuid4() for _ in range(200_000)]
    start = time.perf_counter()
    now = 0.0
    for i, session in enumerate(sessions):
        now += 0.01
        lease = pool.lease(session, f"v{i}", now)
        if lease is not None:
            pool.holder(lease.number, now)
    elapsed = time.perf_counter() - start
    print(
        f"pool of {len(numbers):,} numbers, {len(sessions):,} lease+lookup pairs "
        f"(expiry and reuse included): {elapsed / len(sessions) * 1e6:.2f} µs per pair"
    )


class _NoDatabase:
    """Sessions never touch the database between flushes; the memory figure needs none."""


def memory_figures(count: int) -> None:
    pool_row = Pool(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        name="bench",
        public_key="pk_bench",
        allowed_origins=[],
        target_numbers=[],
        lease_hold_seconds=86400,
        grace_seconds=0,
        exhaustion_policy="reuse_oldest",
        default_number_id=None,
        default_source="direct",
        form_fields=[],
        attribution_model="last_non_direct",
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    numbers = [f"+44{i:010d}" for i in range(count)]
    clock = [1_795_600_000.0]
    service = Sessions(_NoDatabase(), lambda: clock[0])  # type: ignore[arg-type]
    live = LivePool(pool_row, NumberPool(numbers, hold=86400.0, grace=0.0), None)
    service.pools[pool_row.id] = live
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    page = "https://www.acme.example/landing?utm_source=google&utm_medium=cpc&utm_campaign=x"
    for i in range(count):
        service.start(
            live,
            visitor_id=f"visitor-{i}",
            page_url=page,
            referrer=None,
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
            ip="192.0.2.7",
        )
    service._dirty.clear()  # what the write-behind holds between flushes is not per session
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"{count:,} live sessions with leases: {used / count:,.0f} bytes per session "
        f"({used / 2**20:,.0f} MiB in all)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    args = parser.parse_args()
    http_figures(args.seconds, args.connections)
    pool_figures()
    memory_figures(args.sessions)


if __name__ == "__main__":
    main()
