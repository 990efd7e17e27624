"""Faults an operator meets in the field, with real kills, as callers and call records see them.

- PostgreSQL's postmaster is SIGKILLed while SIPp places 20 calls/s: calls keep completing, the
  API answers 503 with Retry-After (never 500), ``serve`` restarts PostgreSQL itself, and every
  call has exactly one correct row once it is back.
- ``serve`` and every process under it are SIGKILLed with a call up: the next ``serve`` starts
  first time, and the call is closed as interrupted at the last heartbeat, not the restart,
  with its call.completed event queued.
- ``serve`` is SIGKILLed while the database is away: the calls it finished are recorded as they
  were, and their webhooks are delivered once each, signed, at the next start.
- SIGTERM with calls up: new calls get 503 with Retry-After, a second signal hangs up at once,
  both legs of each call get BYE, and the rows say the server shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrouter.store.database import ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from tests.e2e.serve import ServeProcess, seed_cluster
from tests.e2e.sipp import SCENARIOS, free_port, request_scenario, run_sipp, sipp_command
from tests.e2e.test_swap import Receiver

NUMBER = "+441515550001"
RATE = 20
LOAD_SECONDS = 30


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def http(
    url: str, key: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one request; error statuses are returned, not raised."""
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(body).encode()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def query(data_dir: Path, sql: str) -> list[asyncpg.Record]:
    """Rows from the callrouter database that ``serve`` (running) keeps under ``data_dir``."""
    dsn = EmbeddedPostgres.running_dsn(data_dir / "postgres")
    assert dsn is not None, "the embedded PostgreSQL is not running"
    return query_dsn(dsn, sql)


def query_dsn(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dsn)
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def query_stopped(data_dir: Path, sql: str) -> list[asyncpg.Record]:
    """The same after ``serve`` has exited: the cluster is started just for the query."""
    server = EmbeddedPostgres(data_dir / "postgres")
    server.start()
    try:
        return query(data_dir, sql)
    finally:
        server.stop()


def descendants(root: int) -> list[int]:
    """Every process under ``root`` (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def sipp_stats(directory: Path) -> dict[str, str]:
    """The last row of a SIPp -trace_stat CSV in ``directory``, by column name."""
    (path,) = directory.glob("*_.csv")
    with path.open() as file:
        rows = list(csv.reader(file, delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False))


def listen_port() -> int:
    """A port for serve's SIP listeners, free for UDP and TCP, below the kernel's ephemeral
    range: with port 0 (or an ephemeral one) the TCP listener can find the number taken by an
    outgoing connection when other tests on the machine hold many."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(20000, min(low, 30000))  # 30000-39999: media's RTP ports
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port below the ephemeral range")


class Router:
    """``callrouter serve`` with one client and one tracking number routed to ``destination``."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.server = ServeProcess(
            data_dir,
            "--sip-port",
            str(listen_port()),
            "--sip-rate-per-second",
            "1000",
            "--sip-rate-burst",
            "5000",
            *args,
        )
        self.server.wait_ready()
        self.url = self.server.http_url
        self.key = self.server.operator_key
        self.port = self.server.sip_port()

    def api(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
        return http(self.url + path, self.key, body)

    def route(
        self,
        destination: str,
        hook_url: str = "https://hooks.example/callrouter",
        hook_events: tuple[str, ...] = ("call.started", "call.completed"),
    ) -> dict[str, Any]:
        """The client, its number and its webhook; returns the webhook (with its secret)."""
        status, _, client = self.api("/v1/clients", {"name": "Acme"})
        assert status == 201, client
        status, _, number = self.api(
            "/v1/numbers",
            {"client_id": client["id"], "e164": NUMBER, "destination": destination},
        )
        assert status == 201, number
        status, _, hook = self.api(
            "/v1/webhooks",
            {
                "client_id": client["id"],
                "url": hook_url,
                "events": list(hook_events),
            },
        )
        assert status == 201, hook
        made: dict[str, Any] = hook
        return made

    @property
    def postmaster(self) -> int:
        return int(self.server.wait_for(r"embedded PostgreSQL in .*pid (\d+)\)").group(1))


def pbx_command(scenario: str, port: int, directory: Path, calls: int) -> list[str]:
    """SIPp as the client's PBX: listens on ``port`` for ``calls`` calls."""
    directory.mkdir(exist_ok=True)
    command = sipp_command(SCENARIOS / scenario, 0, directory, calls=calls)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(port)
    command[command.index("-timeout") + 1] = "120s"
    return command


def test_postgres_killed_mid_load_calls_go_on_and_every_call_has_one_row(
    workdir: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    router = Router(workdir / "data")
    try:
        pbx_port = free_port()
        router.route(f"sip:desk@127.0.0.1:{pbx_port}")
        processes(
            [
                "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
                "-timeout", "120s", "-trace_err",
            ],
            workdir / "pbx",
        )  # fmt: skip
        calls = RATE * LOAD_SECONDS
        carrier_dir = workdir / "carrier"
        carrier = processes(
            [
                "sipp", f"127.0.0.1:{router.port}", "-sn", "uac", "-d", "500", "-s", NUMBER,
                "-r", str(RATE), "-m", str(calls), "-i", "127.0.0.1", "-p", str(free_port()),
                "-nostdin", "-timeout", "120s", "-trace_stat", "-fd", "1", "-trace_err",
            ],
            carrier_dir,
        )  # fmt: skip
        # The kill comes after 10 s of load: once SIPp has placed RATE * 10 calls.
        until(
            lambda: (
                any(carrier_dir.glob("*_.csv"))
                and int(sipp_stats(carrier_dir).get("TotalCallCreated", 0)) >= RATE * 10
            ),
            60,
            "10 s of load",
        )
        killed = router.postmaster
        os.kill(killed, signal.SIGKILL)

        # The API, meanwhile: 503 with Retry-After while the database is away, never a 500.
        statuses: list[int] = []
        ready_down: list[Any] = []

        def saw_outage() -> bool:
            status, headers, body = router.api("/v1/calls?limit=1")
            statuses.append(status)
            ready_status, _, ready = http(router.url + "/v1/ready")
            if ready_status == 503:
                ready_down.append(ready)
            if status == 503:
                assert headers.get("Retry-After", "").isdigit(), headers
                assert body["status"] == 503, body
            return status == 503 and bool(ready_down)

        until(saw_outage, 20, "a 503 from the API while PostgreSQL is away")
        if 500 in statuses:
            router.server.wait_for("unhandled error", 5)
            router.server.wait_for(r"^[\w.]+(Error|Exception)\b", 5)
            pytest.fail("a 500 while PostgreSQL was away:\n" + router.server.output[-12000:])
        assert ready_down[0]["components"]["database"] == "down", ready_down
        router.server.wait_for(r"database: embedded PostgreSQL restarted \(pid \d+\)", 60)
        until(lambda: router.api("/v1/calls?limit=1")[0] == 200, 30, "the API to answer again")
        until(lambda: http(router.url + "/v1/ready")[0] == 200, 30, "readiness")
        # Changes are heard again: the LISTEN connection came back with the database.
        router.server.wait_for(r"database: listening again", 30)
        status, _, trunk = router.api(
            "/v1/trunks", {"name": "carrier-b", "networks": ["192.0.2.0/24"]}
        )
        assert status == 201, trunk
        router.server.wait_for(r"sip: trunks in service: .*carrier-b", 30)

        carrier.communicate(timeout=120)
        stats = sipp_stats(carrier_dir)
        created, ok = int(stats["TotalCallCreated"]), int(stats["SuccessfulCall(C)"])
        print(f"\ncalls placed {created}, completed {ok} ({100 * ok / created:.2f} %)")
        assert created == calls
        assert ok >= 0.99 * created, stats

        # Once PostgreSQL is back, every call has exactly one row, ended as SIPp saw it.
        ended = "SELECT 1 FROM calls WHERE state = 'ended'"
        until(lambda: len(query(router.data_dir, ended)) >= created, 60, "every call's row")
        rows = query(
            router.data_dir,
            """SELECT c.sip_call_id, c.disposition, c.hangup_by, c.answered_at, c.ended_at,
                      (SELECT count(*) FROM call_attempts a
                       WHERE a.call_id = c.id AND a.result = 'answered') AS answered_attempts
               FROM calls c""",
        )
        assert len(rows) == created
        assert len({r["sip_call_id"] for r in rows}) == created, "one row per call"
        answered = [r for r in rows if r["disposition"] == "answered"]
        assert len(answered) >= ok
        for row in answered:
            assert row["hangup_by"] == "caller"
            assert row["answered_at"] <= row["ended_at"]
            assert row["answered_attempts"] == 1
        assert not [r for r in rows if r["disposition"] == "interrupted"]
        # The client's webhooks lost nothing either: raised during the outage, stored after it.
        stored = "SELECT event FROM webhook_deliveries"
        until(lambda: len(query(router.data_dir, stored)) >= 2 * created, 60, "webhook events")
        events = [r["event"] for r in query(router.data_dir, stored)]
        assert (events.count("call.started"), events.count("call.completed")) == (created,) * 2
    finally:
        router.server.stop()


def test_serve_and_all_its_children_killed_then_the_next_start_works_first_time(
    workdir: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    data_dir = workdir / "data"
    router = Router(data_dir)
    pbx_port = free_port()
    router.route(f"sip:desk@127.0.0.1:{pbx_port}")
    processes(
        [
            "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
            "-timeout", "120s",
        ],
        workdir / "pbx",
    )  # fmt: skip
    processes(
        [
            "sipp", f"127.0.0.1:{router.port}", "-sn", "uac", "-d", "120000", "-s", NUMBER,
            "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin", "-timeout", "120s",
        ],
        workdir / "carrier",
    )  # fmt: skip
    until(
        lambda: bool(query(data_dir, "SELECT 1 FROM calls WHERE state = 'active'")),
        30,
        "the call to be answered",
    )
    assert router.postmaster in descendants(router.server.process.pid)
    kill_everything(router)
    killed_at = datetime.now(UTC)

    again = Router(data_dir)  # wait_ready: the first attempt comes up
    try:
        assert "error" not in again.server.output.lower(), again.server.output
        (call,) = query(data_dir, "SELECT * FROM calls")
        assert (call["disposition"], call["hangup_by"]) == ("interrupted", "system")
        # It ended at the last heartbeat before the kill, not at the restart.
        assert call["answered_at"] <= call["ended_at"] <= killed_at
        # Its webhooks hear of its end, as they would of a lost node's call (queued with the
        # close; the endpoint does not exist, the row is what is checked).
        (completed,) = query(
            data_dir,
            "SELECT payload -> 'data' ->> 'call_id' AS call_id, "
            "payload -> 'data' ->> 'disposition' AS disposition, "
            "payload -> 'data' ->> 'reason' AS reason "
            "FROM webhook_deliveries WHERE event = 'call.completed'",
        )
        assert tuple(completed) == (str(call["id"]), "interrupted", "server restarted")
    finally:
        again.server.stop()


def kill_everything(router: Router) -> None:
    """SIGKILL serve and every process under it at once."""
    victims = [router.server.process.pid, *descendants(router.server.process.pid)]
    for pid in victims:
        # A short-lived child (a PostgreSQL worker) may have exited since it was listed.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    router.server.kill()


def test_calls_that_ended_while_the_database_was_away_survive_a_kill_of_serve(
    workdir: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    """The issue's case: calls finish normally during an outage, then serve dies. They are
    recorded as the calls they were (from the spool), not as interrupted."""
    seed_cluster(workdir)  # a migrated cluster, copied: no initdb
    database = EmbeddedPostgres(workdir / "postgres")
    database.start()
    try:
        asyncio.run(ensure_database(database.admin_dsn, DATABASE))
        data_dir = workdir / "data"
        router = Router(data_dir, "--database-url", database.dsn)
        pbx_port = free_port()
        router.route(f"sip:desk@127.0.0.1:{pbx_port}")
        processes(
            [
                "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
                "-timeout", "120s",
            ],
            workdir / "pbx",
        )  # fmt: skip
        # One call while the database is up: the number is in memory from then on (a number
        # added over the API is also loaded by the periodic refresh, seconds later).
        first = processes(
            [
                "sipp", f"127.0.0.1:{router.port}", "-sn", "uac", "-d", "200", "-s", NUMBER,
                "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
                "-timeout", "60s", "-timeout_error",
            ],
            workdir / "first",
        )  # fmt: skip
        out, _ = first.communicate(timeout=90)
        assert first.returncode == 0, out[-3000:]
        database.stop()  # away, and (not embedded) nobody brings it back
        until(lambda: http(router.url + "/v1/ready")[0] == 503, 30, "readiness to say so")

        carrier = processes(
            [
                "sipp", f"127.0.0.1:{router.port}", "-sn", "uac", "-d", "200", "-s", NUMBER,
                "-r", "10", "-m", "20", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
                "-timeout", "60s", "-timeout_error",
            ],
            workdir / "carrier",
        )  # fmt: skip
        out, _ = carrier.communicate(timeout=90)
        assert carrier.returncode == 0, out[-3000:]
        spooled = data_dir / "spool"
        until(
            lambda: (
                sum(f.read_text().count('"type":"CallEnded"') for f in spooled.glob("*.jsonl"))
                >= 21
            ),
            30,
            "every call's end on disk (the spool keeps applied events until its segment rolls)",
        )
        kill_everything(router)

        database.start()
        again = Router(data_dir, "--database-url", database.dsn)
        try:
            again.server.wait_for(r"calls: wrote \d+ call event\(s\) spooled by the last run")
            rows = query_dsn(database.dsn, "SELECT disposition, hangup_by FROM calls")
            assert [tuple(r) for r in rows] == [("answered", "caller")] * 21
        finally:
            again.server.stop()
    finally:
        database.stop()


def test_webhooks_of_a_call_made_while_the_database_was_away_survive_a_kill_of_serve(
    workdir: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    """The database stopped, a call made and ended, serve SIGKILLed before the database is
    back: at the next start the call's three webhook events are delivered, signed, once each."""
    seed_cluster(workdir)
    database = EmbeddedPostgres(workdir / "postgres")
    database.start()
    receiver = Receiver()
    private = ("--http-webhooks-to-private-addresses", "true")
    try:
        asyncio.run(ensure_database(database.admin_dsn, DATABASE))
        data_dir = workdir / "data"
        router = Router(data_dir, "--database-url", database.dsn, *private)
        pbx_port = free_port()
        events = ("call.started", "call.answered", "call.completed")
        hook = router.route(f"sip:desk@127.0.0.1:{pbx_port}", receiver.url, events)
        processes(
            [
                "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
                "-timeout", "120s",
            ],
            workdir / "pbx",
        )  # fmt: skip

        def call(name: str) -> None:
            carrier = processes(
                [
                    "sipp", f"127.0.0.1:{router.port}", "-sn", "uac", "-d", "200", "-s", NUMBER,
                    "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
                    "-timeout", "60s", "-timeout_error",
                ],
                workdir / name,
            )  # fmt: skip
            out, _ = carrier.communicate(timeout=90)
            assert carrier.returncode == 0, out[-3000:]

        # A call while the database is up puts the number in memory, and shows the receiver
        # works: its three events arrive.
        delivered = (
            "SELECT attempts FROM webhook_deliveries "
            f"WHERE webhook_id = '{hook['id']}' AND delivered_at IS NOT NULL"
        )
        call("first")
        first = receiver.events(3, hook["secret"])
        assert set(first) == set(events)
        # Noted as delivered before the database goes (else they would be sent again).
        until(lambda: len(query_dsn(database.dsn, delivered)) == 3, 30, "three deliveries")
        database.stop()  # away, and (not embedded) nobody brings it back
        until(lambda: http(router.url + "/v1/ready")[0] == 503, 30, "readiness to say so")

        call("second")
        spooled = data_dir / "spool"

        def spooled_ends() -> int:
            lines = (line for f in spooled.glob("*.jsonl") for line in f.read_text().splitlines())
            return sum('"type":"WebhookRaised"' in x and "call.completed" in x for x in lines)

        # Both calls' call.completed on disk (the spool keeps applied events until its
        # segment rolls), then serve and everything under it killed.
        until(lambda: spooled_ends() >= 2, 30, "the second call's call.completed on disk")
        assert receiver.received.empty()
        kill_everything(router)
        killed_at = datetime.now(UTC)

        database.start()
        again = Router(data_dir, "--database-url", database.dsn, *private)
        try:
            again.server.wait_for(r"calls: wrote \d+ call event\(s\) spooled by the last run")
            second = receiver.events(3, hook["secret"])  # signatures checked
            assert set(second) == set(events)
            (call_id,) = {event["data"]["call_id"] for event in second.values()}
            assert call_id != first["call.started"]["data"]["call_id"]
            assert second["call.completed"]["data"]["disposition"] == "answered"
            for event in second.values():  # raised before the kill, not made up at the start
                assert datetime.fromisoformat(event["created_at"]) < killed_at
            # Once each: six deliveries in all, each sent once, and nothing more arrives.
            until(lambda: len(query_dsn(database.dsn, delivered)) == 6, 30, "six deliveries")
            rows = query_dsn(
                database.dsn,
                f"SELECT attempts FROM webhook_deliveries WHERE webhook_id = '{hook['id']}'",
            )
            assert [r["attempts"] for r in rows] == [1] * 6
            assert receiver.received.empty()
        finally:
            again.server.stop()
    finally:
        receiver.close()
        database.stop()


def test_sigterm_refuses_new_calls_then_hangs_up_both_legs_and_records_shutdown(
    workdir: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    data_dir = workdir / "data"
    # Calls may go on for 10 minutes: only the second signal can end them within this test.
    router = Router(data_dir, "--sip-drain-seconds", "600")
    pbx_port = free_port()
    router.route(f"sip:desk@127.0.0.1:{pbx_port}")
    pbx = processes(pbx_command("pbx_answer.xml", pbx_port, workdir / "pbx", 2), workdir / "pbx")
    carrier_dir = workdir / "carrier"
    carrier_dir.mkdir()
    carrier = processes(
        sipp_command(
            SCENARIOS / "carrier_callee_hangs_up.xml",
            router.port,
            carrier_dir,
            service=NUMBER,
            calls=2,
        ),
        carrier_dir,
    )
    until(
        lambda: len(query(data_dir, "SELECT 1 FROM calls WHERE state = 'active'")) == 2,
        30,
        "both calls to be answered",
    )
    router.server.process.send_signal(signal.SIGTERM)
    router.server.wait_for(r"stopping: new calls get 503", 30)

    refused = run_sipp(
        request_scenario("INVITE", 503, checks=("Retry-After: [0-9]+",)),
        router.port,
        workdir,
        service=NUMBER,
    )
    assert refused.returncode == 0, refused.stdout[-2000:] + refused.stderr[-2000:]
    # A carrier's keep-alive and a load balancer see it too.
    probed = run_sipp(request_scenario("OPTIONS", 503), router.port, workdir)
    assert probed.returncode == 0, probed.stdout[-2000:] + probed.stderr[-2000:]
    status, headers, ready = http(router.url + "/v1/ready")
    assert (status, ready["components"]["sip"]) == (503, "down"), ready
    assert headers.get("Retry-After", "").isdigit()

    router.server.process.send_signal(signal.SIGTERM)  # the second signal: now
    assert router.server.stop() == 0
    assert "stopping: hanging up 2 call(s) on both legs" in router.server.output
    # Both legs of both calls got a BYE and answered it: each SIPp finished its scenario.
    out, _ = carrier.communicate(timeout=60)
    assert carrier.returncode == 0, out[-2000:]
    out, _ = pbx.communicate(timeout=60)
    assert pbx.returncode == 0, out[-2000:]

    rows = query_stopped(
        data_dir, "SELECT disposition, hangup_by, hangup_reason FROM calls ORDER BY started_at"
    )
    assert [tuple(r) for r in rows] == [("answered", "system", "server shutdown")] * 2
