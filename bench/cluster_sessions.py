"""The pool across nodes: what a lease costs through PostgreSQL (p50/p99, against a bare
``SELECT 1`` round trip on the same connection pool in the same run), and sessions/s over HTTP
with one and two ``callrouter serve`` nodes on one PostgreSQL, with the CPU each node and
PostgreSQL used. On a 2-core machine two nodes share the cores with PostgreSQL and wrk: expect
no scaling here; the figure says what a second node costs, not what it gains.

    python3 bench/cluster_sessions.py [--leases 2000] [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import call, lua_script  # noqa: E402
from bench.sessions import WRK_POST  # noqa: E402
from callrouter.routing.sessions import Sessions  # noqa: E402
from callrouter.store.clients import CLIENTS  # noqa: E402
from callrouter.store.database import create_pool, ensure_database  # noqa: E402
from callrouter.store.embedded import DATABASE, EmbeddedPostgres, server_processes  # noqa: E402
from callrouter.store.migrations import migrate  # noqa: E402
from callrouter.store.numbers import NUMBERS  # noqa: E402
from callrouter.store.pools import POOLS, new_public_key  # noqa: E402
from tests.e2e.serve import ServeProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = "https://www.acme.example/?utm_source=google&utm_campaign=bench"


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99) - 1] * 1e3


async def _timed(work: Callable[[int], Awaitable[object]], count: int) -> list[float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        await work(i)
        samples.append(time.perf_counter() - start)
    return samples


async def lease_latency(dsn: str, pgdata: Path, count: int) -> None:
    db = await create_pool(dsn, min_size=2, max_size=4, wait_for_disk=False)  # as serve's
    try:
        client = await CLIENTS.insert(db, {}, {"name": "Bench"})
        row = await POOLS.insert(
            db,
            {"client_id": client.id, "public_key": new_public_key()},
            {"name": "latency", "allowed_origins": ["https://www.acme.example"]},
        )
        for i in range(1000):
            await NUMBERS.insert(
                db, {"client_id": client.id, "e164": f"+4415166{i:05d}"}, {"pool_id": row.id}
            )
        node = Sessions(db, time.time, announce=lambda _line: None)
        await node.load()
        live = node.pools[row.id]
        session_ids = []

        async def select_one(_i: int) -> object:
            return await db.fetchval("SELECT 1")

        async def new_visit(i: int) -> object:
            visit, _ = await node.start(
                live, visitor_id=f"v{i}", page_url=PAGE, referrer=None, user_agent=None, ip=None
            )
            session_ids.append(visit.record.id)
            return visit

        async def heartbeat(i: int) -> object:
            return await node.heartbeat(session_ids[i])

        async def attribute(i: int) -> object:
            return node.attribute(f"+4415166{i % 1000:05d}")

        await _timed(select_one, 200)  # warm the pool's connections and statement caches
        reference = _ms(await _timed(select_one, count))
        before = _cpu(server_processes(pgdata))
        created = _ms(await _timed(new_visit, count))
        per_visit = (_cpu(server_processes(pgdata)) - before) / count
        before = _cpu(server_processes(pgdata))
        renewed = _ms(await _timed(heartbeat, count))
        await node.flush()  # what is still waiting: the CPU counts every renewal written
        per_renewal = (_cpu(server_processes(pgdata)) - before) / count
        looked_up = _ms(await _timed(attribute, count))
    finally:
        await db.close()
    print(f"one node, {count} operations each, embedded PostgreSQL on loopback (p50 / p99 ms)")
    print(
        f"  SELECT 1 round trip (reference):            {reference[0]:7.3f} / {reference[1]:7.3f}"
    )
    for name, (p50, p99) in (
        ("new visit: lease + session, one transaction", created),
        ("heartbeat: from the index, written behind  ", renewed),
    ):
        extra = p50 - reference[0]
        print(
            f"  {name}: {p50:7.3f} / {p99:7.3f}   "
            f"x{p50 / reference[0]:.1f} the reference, +{extra:.3f} ms p50"
        )
    print(f"  PostgreSQL CPU per new visit, one at a time: {per_visit * 1e3:7.3f} ms")
    print(f"  PostgreSQL CPU per heartbeat, batched:       {per_renewal * 1e3:7.3f} ms")
    print(
        f"  call attribution from the node's index:      {looked_up[0]:7.4f} / {looked_up[1]:7.4f}"
    )


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far; a process gone counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (serve and its media worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _wrk(
    url: str, seconds: int, connections: int, script: tuple[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *script, url],
        stdout=subprocess.PIPE,
        text=True,
    )


def _rate(process: subprocess.Popen[str]) -> float:
    out, _ = process.communicate(timeout=600)
    if "Non-2xx" in out:
        raise SystemExit("error responses during the run; the figure would be wrong:\n" + out)
    return float(out.split("Requests/sec:")[1].split()[0])


def throughput(server: EmbeddedPostgres, root: Path, seconds: int, connections: int) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    flags = (
        *("--http-public-rate-per-second", "1e9", "--http-public-rate-burst", "1e9"),
        *("--http-rate-per-second", "1e9", "--http-rate-burst", "1000000000"),
    )
    first = ServeProcess(
        root / "node-a", "--database-url", server.dsn, "--cluster-node", "a", *flags
    ).wait_ready()
    nodes = [first]
    try:
        base, operator = first.http_url, first.operator_key
        assert operator is not None
        client = call(base + "/v1/clients", operator, {"name": "Bench"})
        pool = call(
            base + "/v1/pools",
            operator,
            {
                "client_id": client["id"],
                "name": "site",
                "allowed_origins": ["https://www.acme.example"],
            },
        )
        for i in range(200):
            call(
                base + "/v1/numbers",
                operator,
                {"client_id": client["id"], "e164": f"+4415177{i:05d}", "pool_id": pool["id"]},
            )
        first.wait_for(r"sessions: pool \S+ loaded with 200 number")
        script = lua_script(
            root / "post.lua", WRK_POST.replace("POOL_KEY", str(pool["public_key"]))
        )
        nodes.append(
            ServeProcess(
                root / "node-b", "--database-url", server.dsn, "--cluster-node", "b", *flags
            ).wait_ready()
        )
        print(
            f"POST /v1/sessions, {connections} connections per node, {seconds} s, wrk on loopback"
        )
        for count in (1, 2):
            running = nodes[:count]
            for node in running:  # warm-up
                _rate(_wrk(node.http_url + "/v1/sessions", 2, connections, script))
            trees = [_tree(node.process.pid) for node in running]
            database = server_processes(server.pgdata)
            before = [_cpu(tree) for tree in trees], _cpu(database)
            loads = [
                _wrk(n.http_url + "/v1/sessions", seconds, connections, script) for n in running
            ]
            rates = [_rate(load) for load in loads]
            after = [_cpu(tree) for tree in trees], _cpu(database + server_processes(server.pgdata))
            used = [a - b for a, b in zip(after[0], before[0], strict=True)]
            print(
                f"  {count} node(s): {sum(rates):8.0f} sessions/s in all "
                f"({', '.join(f'{r:.0f}' for r in rates)}); CPU s per node "
                f"{', '.join(f'{u:.1f}' for u in used)}; PostgreSQL {after[1] - before[1]:.1f} "
                f"CPU s over {seconds} s"
            )
    finally:
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leases", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir="/tmp"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "postgres")
    server.start()
    try:
        asyncio.run(ensure_database(server.admin_dsn, DATABASE))
        dsn = server.dsn

        async def prepare() -> None:
            import asyncpg

            connection = await asyncpg.connect(dsn)
            try:
                await migrate(connection)
            finally:
                await connection.close()

        asyncio.run(prepare())
        asyncio.run(lease_latency(dsn, server.pgdata, args.leases))
        throughput(server, root, args.seconds, args.connections)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
