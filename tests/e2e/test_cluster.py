"""Two nodes on one PostgreSQL behind Kamailio's dispatcher (contrib/kamailio), SIPp as the
carrier: node A is SIGKILLed mid-load; new calls keep completing through node B, which closes
A's open calls as interrupted and takes over every once-only duty. A visitor whose number was
leased by node A's swap-script API calls after A is dead: node B attributes the call to that
visit.

The two nodes start at the same moment against an empty database: the migrations race and
each is applied once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from callrouter.cluster import Duty
from callrouter.store import nodes
from callrouter.store.migrations import available
from tests.e2e.cluster import NUMBER, Database, Dispatcher, Node, query, start_nodes
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, free_port, sipp_command, sipp_errors
from tests.e2e.test_faults import sipp_stats, until

NODE_TIMEOUT = 3
LEASED = "+441515550100"
"""The pool's one number, leased to the visitor by node A."""
LANDING = "https://acme.example/offers?utm_source=newsletter&utm_medium=email&utm_campaign=dec"


def api(node: Node, key: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    """A request to one node (``key`` None: the public swap-script API)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        node.server.http_url + path,
        method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def carrier(
    dispatcher: Dispatcher,
    directory: Path,
    calls: int,
    rate: int,
    hold_ms: int,
    *,
    number: str = NUMBER,
) -> list[str]:
    """SIPp as the carrier, through the dispatcher, with a CSV of its counters."""
    directory.mkdir(exist_ok=True)
    command = sipp_command(
        SCENARIOS / "carrier_via_proxy.xml", dispatcher.port, directory, service=number,
        calls=calls,
        extra=("-r", str(rate), "-d", str(hold_ms), "-trace_stat", "-fd", "1"),
    )  # fmt: skip
    return command


def duty_holders(dsn: str) -> dict[Duty, str | None]:
    async def read() -> dict[Duty, str | None]:
        connection = await asyncpg.connect(dsn)
        try:
            return {duty: await nodes.duty_holder(connection, duty) for duty in Duty}
        finally:
            await connection.close()

    return asyncio.run(read())


def test_cluster_of_two_behind_kamailio_survives_a_node_killed_mid_load(
    workdir: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    database = Database(workdir)
    a = b = None
    dispatcher = None
    try:
        a, b = start_nodes(
            workdir, database.dsn, ["node-a", "node-b"],
            "--cluster-node-timeout", str(NODE_TIMEOUT), "--media-workers", "0",
        )  # fmt: skip
        # Both raced for the empty database; each migration was applied once, by one of them.
        applied = [m for node in (a, b) for m in node.server.messages if "applied migration" in m]
        assert len(applied) == len(available()), applied
        key = a.server.operator_key or b.server.operator_key
        assert key is not None
        # A third node given a live node's name is refused, naming the setting.
        twin = ServeProcess(
            workdir / "twin", "--database-url", database.dsn, "--cluster-node", "node-b"
        )
        assert twin.process.wait(60) == 2
        twin.drain()
        assert "a live node is already named 'node-b'" in twin.output, twin.output[-3000:]

        pbx_port = free_port()
        processes(
            [
                "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(pbx_port), "-nostdin",
                "-timeout", "120s",
            ],
            workdir / "pbx",
        )  # fmt: skip
        client = api(a, key, "/v1/clients", {"name": "Acme"})
        # Deliveries never succeed (no such host): their rows are what is checked.
        hook = {"client_id": client["id"], "url": "https://hooks.example/callrouter"}
        api(a, key, "/v1/webhooks", {**hook, "events": ["call.completed"]})
        desk = f"sip:desk@127.0.0.1:{pbx_port}"
        api(a, key, "/v1/numbers", {"client_id": client["id"], "e164": NUMBER, "destination": desk})
        # A pool of one number; both nodes hear of it.
        pool = api(
            a, key, "/v1/pools",
            {"client_id": client["id"], "name": "Offers", "target_numbers": ["+441515550999"]},
        )  # fmt: skip
        api(
            a, key, "/v1/numbers",
            {"client_id": client["id"], "e164": LEASED, "pool_id": pool["id"], "destination": desk},
        )  # fmt: skip
        for node in (a, b):
            node.server.wait_for(rf"sessions: pool {pool['id']} loaded with 1 number", 30)
        # The visitor's page asks node A for a number.
        visit = api(a, None, "/v1/sessions", {"pool_key": pool["public_key"], "page_url": LANDING})
        assert visit["number"]["e164"] == LEASED
        # Each duty is done by exactly one of the two.
        until(lambda: None not in duty_holders(database.dsn).values(), 20, "every duty taken")

        dispatcher = Dispatcher(workdir, [a, b])
        # Mid-load: calls of 4 s at 10/s, alternately on A and B.
        before = workdir / "before"
        load = processes(carrier(dispatcher, before, 60, 10, 4000), before)
        open_on_a = "SELECT id FROM calls WHERE node = 'node-a' AND state = 'active'"
        until(lambda: len(query(database.dsn, open_on_a)) >= 3, 30, "calls up on node A")
        a.kill()
        killed_at = datetime.now(UTC)

        until(
            lambda: dispatcher.saw(f"node sip:127.0.0.1:{a.sip_port};transport=udp is down"),
            20,
            "the dispatcher to notice",
        )
        noticed_at = datetime.now(UTC)
        # From now on new calls go to B only: at least 99 % of them must complete.
        after = workdir / "after"
        placed = processes(carrier(dispatcher, after, 100, 25, 200), after)
        output, _ = placed.communicate(timeout=90)
        stats = sipp_stats(after)
        created, ok = int(stats["TotalCallCreated"]), int(stats["SuccessfulCall(C)"])
        load.communicate(timeout=90)
        mid = sipp_stats(before)
        print(
            f"\nduring the kill: {mid['SuccessfulCall(C)']} of {mid['TotalCallCreated']} "
            f"calls completed; after the dispatcher noticed: {ok} of {created} "
            f"({100 * ok / created:.1f} %)"
        )
        assert created == 100
        assert ok >= 99, output[-3000:] + sipp_errors(after) + dispatcher.log.read_text()[-3000:]

        # The visitor calls the number node A leased; A is dead, so B takes the call and finds
        # the visit in PostgreSQL.
        visitor = workdir / "visitor"
        called = processes(carrier(dispatcher, visitor, 1, 1, 200, number=LEASED), visitor)
        output, _ = called.communicate(timeout=60)
        assert called.returncode == 0, output[-3000:] + sipp_errors(visitor)
        path = "/v1/calls?number=" + LEASED.replace("+", "%2B")
        until(lambda: bool(api(b, key, path)["data"]), 20, "the visitor's call record")
        (call,) = api(b, key, path)["data"]
        assert call["session_id"] == visit["session_id"]
        facts = call["attribution"]
        assert (facts["source"], facts["medium"], facts["campaign"]) == (
            "newsletter",
            "email",
            "dec",
        )
        (row,) = query(database.dsn, "SELECT node FROM calls WHERE id = $1::uuid", call["id"])
        assert row["node"] == "node-b"

        # B closes A's open calls as interrupted, at A's last heartbeat (before the kill).
        until(
            lambda: (
                not query(
                    database.dsn, "SELECT 1 FROM calls WHERE node = 'node-a' AND state <> 'ended'"
                )
            ),
            NODE_TIMEOUT + 20,
            "node A's calls to be closed",
        )
        b.server.wait_for(r"cluster: closed \d+ open call\(s\) of lost node node-a", 10)
        closed = query(
            database.dsn,
            "SELECT disposition, hangup_by, hangup_reason, ended_at FROM calls "
            "WHERE node = 'node-a' AND hangup_reason = 'node node-a lost'",
        )
        assert len(closed) >= 3
        for row in closed:
            assert (row["disposition"], row["hangup_by"]) == ("interrupted", "system")
            assert row["ended_at"] <= killed_at
        # Each with the call.completed event A would have sent, queued by B with the close.
        events = query(
            database.dsn,
            "SELECT c.id, d.payload -> 'data' ->> 'disposition' AS disposition, "
            "d.payload -> 'data' ->> 'reason' AS reason FROM calls c "
            "LEFT JOIN webhook_deliveries d ON d.event = 'call.completed' "
            "AND d.payload -> 'data' ->> 'call_id' = c.id::text "
            "WHERE c.node = 'node-a' AND c.hangup_reason = 'node node-a lost'",
        )
        assert len(events) == len(closed)
        for event in events:
            assert (event["disposition"], event["reason"]) == ("interrupted", "node node-a lost")
        # The calls placed after the notice are B's, each with its row, ended as SIPp saw.
        answered_on_b = (
            "SELECT 1 FROM calls WHERE node = 'node-b' AND started_at >= $1 "
            "AND disposition = 'answered'"
        )
        until(
            lambda: len(query(database.dsn, answered_on_b, noticed_at)) >= ok,
            20,
            "a row for every call completed through node B",
        )
        # Every once-only duty moved to the survivor.
        until(
            lambda: set(duty_holders(database.dsn).values()) == {"node-b"},
            20,
            "node B to take every duty",
        )
        with urllib.request.urlopen(b.server.http_url + "/metrics", timeout=30) as response:
            scraped = response.read().decode()
        for duty in Duty:
            assert f'callrouter_cluster_duty{{duty="{duty.label}"}} 1.0' in scraped, scraped
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        for started in (a, b):
            if started is not None:
                started.kill()
        database.stop()
