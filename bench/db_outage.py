"""Calls/s and post-dial delay through ``callrouter serve`` while its database is down versus up.

The reference is the same server in the same run with PostgreSQL up. The database is a
PostgreSQL this script owns (``--database-url``), so it can stay down for a whole phase: serve
supervises only the embedded server it starts itself, and would bring that one back at once.

For each phase SIPp's built-in uac offers ``--rate`` calls/s of ``--hold-ms`` calls for
``--seconds`` to serve, which routes them to SIPp's built-in uas. Printed: the achieved rate
(200 OKs per second, first to last), completed calls, post-dial delay (INVITE to 200, p50 and
p99, 1 ms resolution) and the ratios down/up; then how long the spool took to reach the
database once it was back.

usage: python3 bench/db_outage.py [--rate 100] [--seconds 15] [--hold-ms 1000]
needs: apt-get install sip-tester
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.store.database import ensure_database  # noqa: E402
from callrouter.store.embedded import DATABASE, EmbeddedPostgres  # noqa: E402
from tests.e2e.sipp import free_port  # noqa: E402

NUMBER = "+441515550001"


@dataclass(frozen=True)
class Phase:
    created: int
    ok: int
    cps: float
    pdd_mean: float
    pdd_p50: float
    pdd_p99: float


def sipp_phase(router: int, rate: int, seconds: int, hold_ms: int, out: Path) -> Phase:
    out.mkdir()
    calls = rate * seconds
    subprocess.run(
        [
            "sipp", f"127.0.0.1:{router}", "-sn", "uac", "-s", NUMBER, "-r", str(rate),
            "-m", str(calls), "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_port()),
            "-nostdin", "-timeout", f"{seconds + 60}s", "-trace_stat", "-trace_rtt",
            "-rtt_freq", "1", "-buff_size", "4194304",
        ],
        cwd=out, capture_output=True, check=False, timeout=seconds + 120,
    )  # fmt: skip
    with next(out.glob("*_[0-9]*_.csv")).open() as file:
        rows = list(csv.reader(file, delimiter=";"))
    stats = dict(zip(rows[0], rows[-1], strict=False))
    setups: list[tuple[float, float]] = []  # (time stamp ms, INVITE->200 ms)
    with next(out.glob("*_rtt.csv")).open() as file:
        for row in csv.reader(file, delimiter=";"):
            if len(row) >= 3 and row[2] == "1":
                setups.append((float(row[0]), float(row[1])))
    delays = sorted(d for _, d in setups)
    span = (setups[-1][0] - setups[0][0]) / 1000 if len(setups) > 1 else 0.0

    def percentile(p: float) -> float:
        return delays[min(len(delays) - 1, int(p * len(delays)))] if delays else float("nan")

    return Phase(
        int(stats["TotalCallCreated"]),
        int(stats["SuccessfulCall(C)"]),
        (len(setups) - 1) / span if span else 0.0,
        sum(delays) / len(delays) if delays else float("nan"),
        percentile(0.5),
        percentile(0.99),
    )


def api(url: str, key: str, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.load(response)
        return result


class ServeOutput:
    """Reads serve's output as it comes (a full pipe would stall serve), for bounded waits."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line)

    def wait(self, pattern: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m.group(1)
            time.sleep(0.05)
        raise SystemExit(f"serve never said {pattern!r}:\n" + "".join(self.lines[-20:]))


def count_ended(dsn: str) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM calls WHERE state='ended'"))
        finally:
            await connection.close()

    return asyncio.run(count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--hold-ms", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("needs SIPp: apt-get install sip-tester")

    work = Path(tempfile.mkdtemp(prefix="callrouter-bench-outage-", dir="/tmp"))
    work.chmod(0o755)
    database = EmbeddedPostgres(work / "postgres")
    database.start()
    asyncio.run(ensure_database(database.admin_dsn, DATABASE))
    pbx_port, sip_port = free_port(), free_port()
    pbx = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
         "-buff_size", "4194304"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    serve = subprocess.Popen(
        [
            sys.executable, "-m", "callrouter", "serve", "--data-dir", str(work / "data"),
            "--database-url", database.dsn, "--http-port", "0", "--sip-port", str(sip_port),
            "--sip-rate-per-second", "100000", "--sip-rate-burst", "100000",
            "--media-workers", "0",
        ],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
    )  # fmt: skip
    try:
        output = ServeOutput(serve)
        key = output.wait(r"operator key \(shown once, store it now\): (\S+)")
        url = output.wait(r"http: listening on (\S+)")
        output.wait(r"callrouter (\S+) ready")
        client = api(url, key, "/v1/clients", {"name": "Bench"})
        api(
            url,
            key,
            "/v1/numbers",
            {
                "client_id": client["id"],
                "e164": NUMBER,
                "destination": f"sip:desk@127.0.0.1:{pbx_port}",
            },
        )
        up = sipp_phase(sip_port, args.rate, args.seconds, args.hold_ms, work / "up")
        database.stop()
        down = sipp_phase(sip_port, args.rate, args.seconds, args.hold_ms, work / "down")
        back = time.monotonic()
        database.start()
        total = up.created + down.created
        while count_ended(database.dsn) < total and time.monotonic() - back < 120:
            time.sleep(0.1)
        drained = time.monotonic() - back
        stored = count_ended(database.dsn)
    finally:
        serve.terminate()
        serve.wait(60)
        pbx.kill()
        pbx.wait()
        database.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"offered {args.rate} calls/s for {args.seconds} s, {args.hold_ms} ms calls")
    for name, phase in (("database up  ", up), ("database down", down)):
        print(
            f"{name}: {phase.cps:7.1f} calls/s, {phase.ok}/{phase.created} completed, "
            f"post-dial delay mean {phase.pdd_mean:.1f} ms, p50 {phase.pdd_p50:.0f} ms, "
            f"p99 {phase.pdd_p99:.0f} ms"
        )
    ratio = down.cps / up.cps if up.cps else float("nan")
    pdd = down.pdd_mean / up.pdd_mean if up.pdd_mean else float("nan")
    print(f"ratio down/up: calls/s {ratio:.2f}, mean post-dial delay {pdd:.2f}")
    print(
        f"database back: {stored} of {total} calls recorded as ended {drained:.1f} s after "
        "PostgreSQL restarted (spool drained)"
    )


if __name__ == "__main__":
    main()
