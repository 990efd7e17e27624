"""The console on a big account: overview and call-log queries with 1,000,000 calls for one client.

An embedded PostgreSQL is filled with SQL (generate_series) through the real triggers: a year
of calls from 8 sources, 12 campaigns and 20 landing pages, 200,000 distinct callers, one call in
ten recorded. Then each console query runs repeatedly and its p50/p99 are printed, beside the
raw reference in the same run: the bare indexed read of the newest 50 calls' ids (the least any
call-log page can cost). The overview read straight from the calls table is printed too: what
the roll-ups save.

    python3 bench/console.py [--calls 1000000] [--runs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.store import call_days, call_log  # noqa: E402
from callrouter.store.call_log import CallLogFilter  # noqa: E402
from callrouter.store.database import create_pool, ensure_database  # noqa: E402
from callrouter.store.embedded import EmbeddedPostgres  # noqa: E402
from callrouter.store.migrations import migrate  # noqa: E402

END = datetime.fromisoformat("2026-12-01T00:00:00+00:00")

# One chunk of calls: a UUIDv7 made from each call's start (as the router makes it), a start
# spread over the year before END, attribution from a few sources, campaigns and pages.
FILL = """
INSERT INTO calls (id, client_id, number_id, tracking_number, caller_number, sip_call_id,
                   attribution, state, disposition, hangup_by, record, started_at, answered_at,
                   ended_at)
SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text || 'x'), 1, 15))::uuid,
       $1, ($2::uuid[])[1 + g % array_length($2::uuid[], 1)], '+441515550001',
       '+4477009' || lpad((g * 7919 % 200000)::text, 5, '0'), 'c' || g,
       jsonb_build_object('source', (ARRAY['google','bing','facebook','direct','newsletter',
                                           'linkedin','referral','tv'])[1 + g % 8],
                          'campaign', 'campaign-' || (g % 12),
                          'landing_page', '/page-' || (g % 20)),
       'ended', (ARRAY['answered','answered','answered','no_answer','busy'])[1 + g % 5],
       'caller', g % 10 = 0, t, CASE WHEN g % 5 < 3 THEN t + interval '5 s' END,
       t + interval '90 s'
FROM generate_series($3::bigint, $4::bigint) g,
     LATERAL (SELECT $5::timestamptz - (g * 31536000 / $6::bigint) * interval '1 s' AS t) s
"""


async def fill(pool: asyncpg.Connection[asyncpg.Record], calls: int) -> Any:
    """Fill through one connection without a statement timeout (a chunk takes a while)."""
    client_id = await pool.fetchval(
        "INSERT INTO clients (id, name) VALUES (gen_random_uuid(), 'Big') RETURNING id"
    )
    numbers = [
        await pool.fetchval(
            "INSERT INTO numbers (id, client_id, e164) VALUES (gen_random_uuid(), $1, $2) "
            "RETURNING id",
            client_id,
            f"+4415155500{n:02d}",
        )
        for n in range(50)
    ]
    chunk = 100_000
    started = time.perf_counter()
    for first in range(0, calls, chunk):
        await pool.execute(
            FILL, client_id, numbers, first, min(first + chunk, calls) - 1, END, calls
        )
        print(f"  {min(first + chunk, calls):,} calls", file=sys.stderr)
    await pool.execute(
        """INSERT INTO recordings (id, client_id, call_id, format, path, bytes, duration_seconds,
                                   peaks, started_at, ended_at)
           SELECT gen_random_uuid(), client_id, id, 'flac', 'x', 1, 1, '{}', started_at, ended_at
           FROM calls WHERE record"""
    )
    await pool.execute("ANALYZE")
    print(f"filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return client_id


async def timed(runs: int, query: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    await query()  # warm the cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await query()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def bench(dsn: str, calls: int, runs: int) -> None:
    filler = await asyncpg.connect(dsn)
    try:
        client_id = await fill(filler, calls)
    finally:
        await filler.close()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        middle = await pool.fetchval(
            "SELECT id FROM calls WHERE client_id = $1 ORDER BY id OFFSET $2 LIMIT 1",
            client_id,
            calls // 2,
        )
        last = END.date() - timedelta(days=1)
        month, year = last - timedelta(days=29), last - timedelta(days=364)
        bing = CallLogFilter(source="bing")
        week = CallLogFilter(started_from=END - timedelta(days=7), started_before=END)

        async def raw() -> object:
            return await pool.fetch(
                "SELECT id FROM calls WHERE client_id = $1 ORDER BY id DESC LIMIT 50", client_id
            )

        async def overview_from_calls(first: date) -> object:
            return await pool.fetch(
                """SELECT (started_at AT TIME ZONE 'UTC')::date, attribution->>'source', count(*)
                   FROM calls WHERE client_id = $1
                     AND started_at >= ($2::date::timestamp AT TIME ZONE 'UTC')
                   GROUP BY 1, 2""",
                client_id,
                first,
            )

        cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("raw: newest 50 ids (reference)", raw),
            ("overview, 30 days", lambda: call_days.overview(pool, client_id, month, last)),
            ("overview, 365 days", lambda: call_days.overview(pool, client_id, year, last)),
            ("call log: first page", lambda: call_log.page(pool, client_id, CallLogFilter())),
            ("call log: source=bing", lambda: call_log.page(pool, client_id, bing)),
            (
                "call log: bing + busy",
                lambda: call_log.page(
                    pool, client_id, CallLogFilter(source="bing", disposition="busy")
                ),
            ),
            (
                "call log: bing + busy + recorded (none)",
                lambda: call_log.page(
                    pool,
                    client_id,
                    CallLogFilter(source="bing", disposition="busy", recorded=True),
                ),
            ),
            ("call log: last 7 days", lambda: call_log.page(pool, client_id, week)),
            (
                f"call log: deep page ({calls // 2:,} in)",
                lambda: call_log.page(pool, client_id, CallLogFilter(), before=middle),
            ),
            (
                "call log: caller's last 6 digits",
                lambda: call_log.page(pool, client_id, CallLogFilter(caller="012345")),
            ),
            ("without roll-ups: 30 days from calls", lambda: overview_from_calls(month)),
        ]
        print(f"\n{calls:,} calls for one client; {runs} runs each; milliseconds")
        print(f"{'query':42} {'p50':>8} {'p99':>8} {'p50 / reference':>16}")
        reference = None
        for name, query in cases:
            p50, p99 = await timed(runs, query)
            reference = reference or p50
            print(f"{name:42} {p50:8.1f} {p99:8.1f} {p50 / reference:16.1f}")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir="/tmp"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "postgres")
    server.start()
    try:

        async def run() -> None:
            await ensure_database(server.admin_dsn, "bench")
            dsn = server.admin_dsn.replace("/postgres?", "/bench?", 1)
            connection = await asyncpg.connect(dsn)
            try:
                await migrate(connection)
            finally:
                await connection.close()
            await bench(dsn, args.calls, args.runs)

        asyncio.run(run())
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
