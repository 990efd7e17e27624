"""Two ``callrouter serve`` nodes on one PostgreSQL: a visit leased through node A's swap-script
API, continued by a page view on node B, is what a SIPp call arriving at node B is credited to."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callrouter.store.database import ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess, seed_cluster
from tests.e2e.sipp import SCENARIOS, free_port, run_sipp, sipp_command

ORIGIN = "https://www.acme.example"
LEASED = "+441515550177"


def post(url: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def get(url: str, key: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = world_traversable_tempdir("callrouter-cluster-pool-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_visit_leased_on_node_a_is_credited_with_a_call_that_lands_on_node_b(
    workdir: Path, tmp_path: Path
) -> None:
    seed_cluster(workdir)  # a migrated cluster, copied: no initdb
    database = EmbeddedPostgres(workdir / "postgres")
    database.start()
    nodes: list[ServeProcess] = []
    pbx = None
    try:
        asyncio.run(ensure_database(database.admin_dsn, DATABASE))
        node_a = ServeProcess(
            workdir / "a", "--database-url", database.dsn, "--cluster-node", "node-a"
        ).wait_ready()
        nodes.append(node_a)
        node_b = ServeProcess(
            workdir / "b", "--database-url", database.dsn, "--cluster-node", "node-b"
        ).wait_ready()
        nodes.append(node_b)
        key = node_a.operator_key
        assert key is not None
        auth = {"Authorization": f"Bearer {key}"}
        a, b = node_a.http_url, node_b.http_url

        port = free_port()
        command = sipp_command(SCENARIOS / "pbx_answer.xml", 0, tmp_path)
        command[1] = "-bind_local"
        command[command.index("-p") + 1] = str(port)
        command.remove("-timeout_error")
        pbx = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)

        client = post(a + "/v1/clients", {"name": "Acme"}, auth)
        pool = post(
            a + "/v1/pools",
            {"client_id": client["id"], "name": "website", "allowed_origins": [ORIGIN]},
            auth,
        )
        post(
            a + "/v1/numbers",
            {
                "client_id": client["id"],
                "e164": LEASED,
                "pool_id": pool["id"],
                "destination": f"sip:desk@127.0.0.1:{port}",
            },
            auth,
        )
        for node in nodes:  # each hears the change by NOTIFY
            node.wait_for(rf"sessions: pool {pool['id']} loaded with 1 number")

        page = {"pool_key": pool["public_key"], "visitor_id": "visitor-1", "referrer": None}
        origin = {"Origin": ORIGIN}
        first = post(
            a + "/v1/sessions", {**page, "page_url": ORIGIN + "/?utm_source=newsletter"}, origin
        )
        assert first["number"]["e164"] == LEASED
        # The visit's next page is served by node B: same visit, same number, a new touch.
        second = post(
            b + "/v1/sessions",
            {**page, "page_url": ORIGIN + "/offers?utm_source=google&utm_campaign=winter"},
            origin,
        )
        assert second["session_id"] == first["session_id"]
        assert second["number"]["e164"] == LEASED

        result = run_sipp("uac", node_b.sip_port(), tmp_path, service=LEASED)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        node_b.wait_event("call.ended", tracking_number=LEASED, disposition="answered")
        (listed,) = get(a + "/v1/calls?number=%2B441515550177", key)["data"]
        call = get(a + f"/v1/calls/{listed['id']}", key)
        assert call["session_id"] == first["session_id"]
        assert call["attribution"]["utm_source"] == "google"  # the visit's latest touch
        assert call["attribution"]["utm_campaign"] == "winter"
    finally:
        if pbx is not None:
            pbx.kill()
            pbx.communicate(timeout=60)
        for node in nodes:
            node.stop()
        database.stop()
