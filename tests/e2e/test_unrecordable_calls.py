"""A node that cannot keep its calls' records refuses new calls, says so, and loses nothing.

``serve`` against a PostgreSQL the test stops (``--database-url``, so nobody brings it back),
its spool on a small tmpfs the test has filled: the call events of a call are held in memory only,
past ``[database] max_held_events`` new INVITEs get 503 and ``/v1/ready`` names the journal as
down. Either the database returns (the held events are written, readiness passes again), or
the tmpfs is freed (the held events go to the spool, new calls are taken, and a SIGKILL of
serve before the database returns loses none of them).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrouter.store.database import ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from tests.e2e.serve import seed_cluster
from tests.e2e.sipp import free_port
from tests.e2e.test_faults import NUMBER, Router, http, kill_everything, query_dsn, until
from tests.store.test_webhook_events import fill, small_disk

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"
)

Processes = Callable[..., subprocess.Popen[str]]

ENDED = "SELECT disposition, hangup_by FROM calls WHERE ended_at IS NOT NULL ORDER BY started_at"

MAX_HELD = 10
"""Fewer than one answered call's events (about 11, and its webhook events): the first call
made with the database away and the spool full puts the node past it."""


class Outage:
    """serve, its database (stoppable), its spool's tmpfs, and a PBX answering every call."""

    def __init__(self, workdir: Path, processes: Processes, database: EmbeddedPostgres) -> None:
        self.workdir = workdir
        self.processes = processes
        self.database = database
        self.data_dir = workdir / "data"
        self.spool = self.data_dir / "spool"
        self.router = Router(
            self.data_dir,
            "--database-url",
            database.dsn,
            "--database-max-held-events",
            str(MAX_HELD),
            "--media-workers",
            "0",
        )
        self.metrics_url = self.router.server.wait_for(r"metrics: (\S+)").group(1)
        pbx_port = free_port()
        self.router.route(f"sip:desk@127.0.0.1:{pbx_port}")
        processes(
            [
                "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
                "-timeout", "300s",
            ],
            workdir / "pbx",
        )  # fmt: skip
        self.calls = 0

    def call(self) -> bool:
        """One 200 ms call from the carrier: whether it was answered and ended well."""
        self.calls += 1
        carrier = self.processes(
            [
                "sipp", f"127.0.0.1:{self.router.port}", "-sn", "uac", "-d", "200", "-s",
                NUMBER, "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
                "-timeout", "60s", "-timeout_error",
            ],
            self.workdir / f"carrier-{self.calls}",
        )  # fmt: skip
        carrier.communicate(timeout=90)
        return carrier.returncode == 0

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, _headers, body = http(self.router.url + "/v1/ready")
        return status, body

    def metric(self, line_start: str) -> float:
        """The value of the metrics sample whose line starts with ``line_start``."""
        with urllib.request.urlopen(self.metrics_url, timeout=30) as response:
            text = response.read().decode()
        (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
        return float(line.rsplit(" ", 1)[1])

    def rows(self, sql: str) -> list[asyncpg.Record]:
        return query_dsn(self.database.dsn, sql)

    def spooled(self, kind: str) -> int:
        """Events of ``kind`` in the spool's segment files."""
        return sum(f.read_text().count(f'"type":"{kind}"') for f in self.spool.glob("*.jsonl"))

    def refuse(self) -> None:
        """The database stopped with the spool's disk full: one call is held in memory only,
        the next is refused, and readiness names the journal."""
        # A first call with the database up: the number is in memory from then on, and the
        # call's events, held, are written to the database at once.
        assert self.call()
        until(lambda: len(self.rows(ENDED)) == 1, 30, "the first call's row, ended")
        assert self.ready()[0] == 200
        self.database.stop()  # away, and (not embedded) nobody brings it back
        assert self.call()  # held in memory only: past MAX_HELD
        until(
            lambda: self.ready()[1]["components"].get("journal") == "down",
            30,
            "readiness to name the journal",
        )
        status, body = self.ready()
        assert status == 503 and body["ready"] is False
        assert body["components"]["journal"] == "down"
        assert self.metric("callrouter_journal_held_events ") >= MAX_HELD
        assert not self.call()  # 503: refused
        assert self.metric('callrouter_calls_refused_total{reason="unrecordable"}') == 1
        assert self.spooled("CallEnded") == 0


@contextmanager
def outage(workdir: Path, processes: Processes) -> Iterator[Outage]:
    seed_cluster(workdir)  # a migrated cluster, copied: no initdb
    database = EmbeddedPostgres(workdir / "postgres")
    database.start()
    try:
        asyncio.run(ensure_database(database.admin_dsn, DATABASE))
        (workdir / "data").mkdir(mode=0o700)
        with small_disk(workdir / "data", "256k", name="spool") as spool:
            # Full from the start: were it filled later, the slack in the last page of the
            # spool's file would still take a few events.
            fill(spool)
            made = Outage(workdir, processes, database)
            try:
                yield made
            finally:
                made.router.server.stop()
    finally:
        database.stop()


def test_readiness_names_the_journal_while_refusing_and_passes_once_the_database_has_it_all(
    workdir: Path, processes: Processes
) -> None:
    with outage(workdir, processes) as node:
        node.refuse()
        node.database.start()
        until(lambda: node.ready()[0] == 200, 60, "readiness once the database has the events")
        assert node.ready()[1]["components"]["journal"] == "up"
        assert node.metric("callrouter_journal_held_events ") == 0
        assert node.call()  # taken again
        until(lambda: len(node.rows(ENDED)) == 3, 30, "the calls' rows")
        # One row each for the answered calls, none for the refused one.
        assert [tuple(r) for r in node.rows("SELECT disposition, hangup_by FROM calls")] == [
            ("answered", "caller")
        ] * 3


def test_held_events_go_to_the_spool_once_the_disk_has_room_and_survive_a_kill_of_serve(
    workdir: Path, processes: Processes
) -> None:
    with outage(workdir, processes) as node:
        node.refuse()
        (node.spool / "filler").unlink()
        # No call is up: the held events are offered to the spool on their own.
        until(lambda: node.spooled("CallEnded") == 1, 30, "the held call's events on disk")
        until(
            lambda: node.ready()[1]["components"]["journal"] == "up",
            30,
            "readiness to stop naming the journal",
        )
        assert node.ready()[0] == 503  # the database is still away
        assert node.metric("callrouter_journal_held_events ") == 0
        assert node.call()  # taken again, spooled
        until(lambda: node.spooled("CallEnded") == 2, 30, "the new call's events on disk")
        kill_everything(node.router)

        node.database.start()
        again = Router(node.data_dir, "--database-url", node.database.dsn, "--media-workers", "0")
        try:
            again.server.wait_for(r"calls: wrote \d+ call event\(s\) spooled by the last run")
            assert [tuple(r) for r in node.rows(ENDED)] == [("answered", "caller")] * 3
            assert len(node.rows("SELECT 1 FROM calls")) == 3
        finally:
            again.server.stop()
