"""Calls/s through Kamailio's dispatcher (contrib/kamailio) with one node, then two, on one
PostgreSQL, with the CPU each node, PostgreSQL and Kamailio used.

The reference is the one-node run of the same invocation: the two-node figures are printed as
ratios of it. Each phase offers ``--rate`` calls/s for ``--seconds`` (SIPp as the carrier,
calls held ``--hold-ms``, hung up by the caller through the proxy) to nodes that route them to
SIPp's uas. Printed per phase: calls completed per second (first INVITE to last BYE answered,
hold time excluded), failed calls, and CPU seconds per process tree (serve with its children;
the postmaster with its backends; Kamailio). On a machine with fewer cores than processes the
second node adds no capacity: the figures show where the CPU went, not how far it scales.

usage: python3 bench/cluster.py [--rate 100] [--seconds 10] [--hold-ms 1000]
needs: apt-get install sip-tester kamailio
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import world_traversable_tempdir  # noqa: E402
from tests.e2e.cluster import (  # noqa: E402
    NUMBER,
    Database,
    Dispatcher,
    Node,
    start_nodes,
)
from tests.e2e.sipp import SCENARIOS, free_port, sipp_command  # noqa: E402
from tests.e2e.test_faults import descendants, sipp_stats  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """CPU of ``root``, its reaped children and its live descendants, in seconds."""
    total = 0
    for pid in (root, *descendants(root)):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17; the split drops the first two).
        total += sum(int(f) for f in fields[11:15])
    return total / TICKS


@dataclass
class Phase:
    nodes: int
    completed: int
    failed: int
    calls_per_second: float
    cpu: dict[str, float]


def run_phase(
    workdir: Path, database: Database, names: list[str], pbx_port: int, args: argparse.Namespace
) -> Phase:
    workdir.mkdir()
    running = start_nodes(workdir, database.dsn, names, "--media-workers", "0")
    dispatcher = Dispatcher(workdir, running)
    try:
        route(running[0], pbx_port, workdir.parent)
        trees = {node.name: node.server.process.pid for node in running}
        assert database.server.pid is not None
        trees["postgresql"] = database.server.pid
        trees["kamailio"] = dispatcher.process.pid
        before = {name: cpu_seconds(pid) for name, pid in trees.items()}
        directory = workdir / f"carrier-{len(names)}"
        directory.mkdir()
        calls = args.rate * args.seconds
        command = sipp_command(
            SCENARIOS / "carrier_via_proxy.xml", dispatcher.port, directory,
            service=NUMBER, calls=calls,
            extra=("-r", str(args.rate), "-d", str(args.hold_ms), "-trace_stat", "-fd", "1"),
        )  # fmt: skip
        started = time.monotonic()
        subprocess.run(
            command, cwd=directory, capture_output=True, timeout=args.seconds + 120, check=False
        )
        elapsed = time.monotonic() - started - args.hold_ms / 1000
        after = {name: cpu_seconds(pid) for name, pid in trees.items()}
        stats = sipp_stats(directory)
        completed = int(stats["SuccessfulCall(C)"])
        return Phase(
            len(names),
            completed,
            int(stats["FailedCall(C)"]),
            completed / elapsed,
            {name: after[name] - before[name] for name in trees},
        )
    finally:
        dispatcher.stop()
        for node in running:
            node.server.stop()


def route(node: Node, pbx_port: int, workdir: Path) -> None:
    """The tracking number, once per database (the second phase finds it there)."""
    marker = workdir / "routed"
    if marker.exists():
        return
    key = node.server.operator_key
    assert key is not None

    def post(path: str, body: dict[str, str]) -> dict[str, str]:
        request = urllib.request.Request(
            node.server.http_url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, str] = json.load(response)
            return result

    client = post("/v1/clients", {"name": "Bench"})
    post(
        "/v1/numbers",
        {
            "client_id": client["id"],
            "e164": NUMBER,
            "destination": f"sip:desk@127.0.0.1:{pbx_port}",
        },
    )
    marker.write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100, help="calls offered per second")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of load per phase")
    parser.add_argument("--hold-ms", type=int, default=1000, help="how long each call lasts")
    args = parser.parse_args()
    workdir = world_traversable_tempdir("callrouter-bench-cluster-")
    database = Database(workdir)
    pbx_port = free_port()
    pbx = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
         "-timeout", "600s"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        phases = [
            run_phase(workdir / "one", database, ["node-a"], pbx_port, args),
            run_phase(workdir / "two", database, ["node-a", "node-b"], pbx_port, args),
        ]
    finally:
        pbx.kill()
        pbx.wait()
        database.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    reference = phases[0]
    print(
        f"offered {args.rate} calls/s for {args.seconds} s, calls held {args.hold_ms} ms, "
        f"{os.cpu_count()} CPU(s)"
    )
    for phase in phases:
        cpu = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phase.cpu.items())
        print(
            f"{phase.nodes} node(s): {phase.calls_per_second:.1f} calls/s "
            f"(x{phase.calls_per_second / reference.calls_per_second:.2f} of 1 node), "
            f"{phase.completed} completed, {phase.failed} failed; CPU: {cpu}"
        )


if __name__ == "__main__":
    main()
