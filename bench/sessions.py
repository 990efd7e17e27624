"""Dynamic number insertion: sessions created per second over HTTP against a bare aiohttp
handler (same run), a node's index cost per lease row and lookup, and memory per live session
with 1,000,000 sessions. What a lease costs through PostgreSQL, and several nodes:
bench/cluster_sessions.py.

    python3 bench/sessions.py [--seconds 10] [--connections 32] [--sessions 1000000]
                              [--before /path/to/a/checkout/of/main] [--rounds 2]

With ``--before``, the HTTP figures of that checkout and of this one alternate, ``--rounds``
times each, in the same run (on shared cores the load moves between runs of minutes apart).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
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
from callrouter.routing.pool import Lease, NumberPool  # noqa: E402
from callrouter.routing.sessions import Visit  # noqa: E402
from callrouter.store.sessions import SessionRecord  # noqa: E402
from tests.e2e.serve import ServeProcess  # noqa: E402

BARE_SERVER = """
import sys, json, uuid
from aiohttp import web
body = open(sys.argv[1], "rb").read()
async def handler(request):
    await request.json()
    return web.Response(body=body, status=201, content_type="application/json")
app = web.Application()
app.router.add_post("/{path:.*}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""

WRK_POST = """
-- Seeded per run: a warm-up run and the measured one would otherwise send the same visitor
-- ids, and the measured run's first visits would continue the warm-up's instead of starting.
math.randomseed(os.time())
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


WRK_BEAT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://www.acme.example"
wrk.body = '{"pool_key": "POOL_KEY"}'
"""


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User and system CPU seconds each of these processes has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def _with_children(roots: list[int]) -> list[int]:
    """These processes and their children (a PostgreSQL server's backends)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    return [*roots, *(pid for pid, parent in parents.items() if parent in roots)]


def measured(
    url: str, roots: list[int], seconds: int, connections: int, *options: str
) -> tuple[float, str, float]:
    """``wrk``'s (requests/s, p99) and the CPU microseconds ``roots`` and their children used
    per request (backends started during the run included): a figure the other work on
    shared cores moves less than requests per second."""
    before = _cpu_seconds(_with_children(roots))
    rps, p99 = wrk(url, seconds, connections, *options)
    after = _cpu_seconds(_with_children(roots))
    used = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return rps, p99, used / (rps * seconds) * 1e6


CURL_HEADERS = ("-H", "Content-Type: application/json", "-H", "Origin: https://www.acme.example")


def http_figures(seconds: int, connections: int, tree: Path | None = None) -> None:
    """:param tree: serve the callrouter of this checkout instead of this one."""
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir="/tmp"))
    root.chmod(0o755)
    server = ServeProcess(
        root / "data",
        "--http-public-rate-per-second",
        "1e9",
        "--http-public-rate-burst",
        "1e9",
        env={"PYTHONPATH": str(tree)} if tree is not None else None,
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
        postgres = int(server.wait_for(r"embedded PostgreSQL .* pid (\d+)").group(1))
        ours_pids = [server.process.pid, postgres]
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
        ours, ours_p99, ours_cpu = measured(
            base + "/v1/sessions", ours_pids, seconds, connections, *script
        )
        ref, ref_p99, ref_cpu = measured(ref_url, [bare.pid], seconds, connections, *script)
        print(f"POST /v1/sessions, {connections} connections, {seconds} s each, wrk on loopback")
        print(f"  callrouter (origin check, lease, session): {ours:9.0f} req/s   p99 {ours_p99}")
        print(f"  bare aiohttp handler, same JSON:           {ref:9.0f} req/s   p99 {ref_p99}")
        print(f"  ratio callrouter / bare:                   {ours / ref:9.2f}")
        print(
            f"  CPU per request: callrouter and its PostgreSQL {ours_cpu:.0f} µs, bare "
            f"{ref_cpu:.0f} µs: ratio bare / callrouter {ref_cpu / ours_cpu:.2f}"
        )
        # A page still open: its heartbeat is answered from the node's index (written behind).
        # A page viewed now: the sample's number went to a later visit during the runs above
        # (the least recently seen session gives its number up when the pool is exhausted),
        # and its heartbeats took the database's path, a statement each.
        session_id = json.loads(
            subprocess.run(
                [
                    "curl",
                    "-s",
                    "-X",
                    "POST",
                    base + "/v1/sessions",
                    *CURL_HEADERS,
                    "-d",
                    json.dumps(
                        {"pool_key": pool["public_key"], "page_url": "https://www.acme.example/"}
                    ),
                ],
                capture_output=True,
                check=True,
            ).stdout
        )["session_id"]
        beat = lua_script(
            root / "beat.lua",
            WRK_BEAT.replace("POOL_KEY", str(pool["public_key"])),
        )
        beat_url = f"{base}/v1/sessions/{session_id}/heartbeat"
        beat_body = root / "beat.json"
        beat_body.write_bytes(
            subprocess.run(
                [
                    "curl",
                    "-s",
                    "-X",
                    "POST",
                    beat_url,
                    *CURL_HEADERS,
                    "-d",
                    json.dumps({"pool_key": pool["public_key"]}),
                ],
                capture_output=True,
                check=True,
            ).stdout
        )
        bare_beat, beat_port = start_bare(BARE_SERVER, str(beat_body))
        try:
            ref_beat = f"http://127.0.0.1:{beat_port}/v1/sessions/{session_id}/heartbeat"
            wrk(beat_url, 2, connections, *beat)
            wrk(ref_beat, 2, connections, *beat)
            ours, ours_p99, ours_cpu = measured(beat_url, ours_pids, seconds, connections, *beat)
            ref, ref_p99, ref_cpu = measured(ref_beat, [bare_beat.pid], seconds, connections, *beat)
        finally:
            bare_beat.terminate()
            bare_beat.wait()
        print(f"POST /v1/sessions/{{id}}/heartbeat, one open page, {connections} connections")
        print(f"  callrouter (origin check, lease renewal): {ours:9.0f} req/s   p99 {ours_p99}")
        print(f"  bare aiohttp handler, same JSON:          {ref:9.0f} req/s   p99 {ref_p99}")
        print(f"  ratio callrouter / bare:                  {ours / ref:9.2f}")
        print(
            f"  CPU per request: callrouter and its PostgreSQL {ours_cpu:.0f} µs, bare "
            f"{ref_cpu:.0f} µs: ratio bare / callrouter {ref_cpu / ours_cpu:.2f}"
        )
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def pool_figures() -> None:
    """A node's index: applying a lease row (as its NOTIFY arrives) and the call's lookup."""
    numbers = [f"+4415155{i:05d}" for i in range(10_000)]
    pool = NumberPool(numbers, hold=1800.0, grace=1800.0)
    count = 200_000
    start = time.perf_counter()
    now = 0.0
    for i in range(count):
        now += 0.01
        number = numbers[i % len(numbers)]
        pool.apply(number, Lease(number, uuid.uuid4(), f"v{i}", now, now, now + 1800.0), i, now)
        pool.holder(number, now)
    elapsed = time.perf_counter() - start
    print(
        f"index of {len(numbers):,} numbers, {count:,} row-apply+lookup pairs: "
        f"{elapsed / count * 1e6:.2f} µs per pair"
    )


def memory_figures(count: int) -> None:
    """What a node keeps per live session: its lease in the index and its visit's record."""
    numbers = [f"+44{i:010d}" for i in range(count)]
    clock = 1_795_600_000.0
    at = datetime.fromtimestamp(clock, UTC)
    index = NumberPool(numbers, hold=86400.0, grace=0.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    touch = {"source": "google", "medium": "cpc", "campaign": "x", "channel": "paid_search"}
    visits = {}
    for i, number in enumerate(numbers):
        session_id = uuid.uuid4()
        index.apply(
            number, Lease(number, session_id, f"visitor-{i}", clock, clock, clock + 86400), 1, clock
        )
        visits[session_id] = Visit(
            SessionRecord(
                id=session_id,
                client_id=session_id,
                pool_id=session_id,
                visitor_id=f"visitor-{i}",
                number=number,
                attribution=dict(touch),
                user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
                ip_network="192.0.2.0/24",
                created_at=at,
                last_seen_at=at,
                lease_expires_at=at,
                ended=False,
                touches={"first": touch, "last": touch},
                journey=[{"url": "https://www.acme.example/landing", "title": None, "at": "x"}],
            )
        )
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"{count:,} live sessions in a node's memory (index + visit): {used / count:,.0f} bytes "
        f"per session ({used / 2**20:,.0f} MiB in all)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, help="a checkout to measure alternately")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.before is None:
        http_figures(args.seconds, args.connections)
    else:
        for _ in range(args.rounds):
            for label, tree in (("before", args.before.resolve()), ("this checkout", ROOT)):
                print(f"--- {label} ({tree}), load average {os.getloadavg()[0]:.1f}")
                http_figures(args.seconds, args.connections, tree)
    pool_figures()
    memory_figures(args.sessions)


if __name__ == "__main__":
    main()
