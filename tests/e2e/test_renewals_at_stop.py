"""A graceful stop writes the lease renewals it answered from memory (heartbeats are written
behind, ``routing/sessions.py``): a visitor told their number is theirs for another hold must
find PostgreSQL agreeing after ``serve`` stops, or the next start (or another node) may lease
that number to someone else while the page still shows it.

``serve`` stops within milliseconds here (no media worker), well inside the 250 ms before the
write-behind flush is due, so without the flush at stop the renewal is lost."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import asyncpg

from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess

ORIGIN = "https://www.acme.example"
NUMBER = "+441515550188"


def post(url: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read().decode()}") from None


async def stored_expiry(dsn: str) -> datetime:
    connection = await asyncpg.connect(dsn)
    try:
        expires: datetime = await connection.fetchval(
            "SELECT expires_at FROM number_leases WHERE number = $1", NUMBER
        )
        return expires
    finally:
        await connection.close()


def test_sigterm_writes_the_renewals_served_from_memory(database_dsn: str) -> None:
    workdir = world_traversable_tempdir("callrouter-renewals-")
    server = ServeProcess(workdir / "data", "--database-url", database_dsn, "--media-workers", "0")
    try:
        server.wait_ready()
        key = server.operator_key
        assert key is not None
        auth = {"Authorization": f"Bearer {key}"}
        url = server.http_url
        client = post(url + "/v1/clients", {"name": "Acme"}, auth)
        pool = post(
            url + "/v1/pools",
            {
                "client_id": client["id"],
                "name": "website",
                "allowed_origins": [ORIGIN],
                "lease_hold_seconds": 300,
            },
            auth,
        )
        post(
            url + "/v1/numbers",
            {
                "client_id": client["id"],
                "e164": NUMBER,
                "pool_id": pool["id"],
                "destination": "sip:desk@127.0.0.1:5099",
            },
            auth,
        )
        server.wait_for(rf"sessions: pool {pool['id']} loaded with 1 number")
        origin = {"Origin": ORIGIN}
        session = post(
            url + "/v1/sessions",
            {"pool_key": pool["public_key"], "visitor_id": "visitor-1", "page_url": ORIGIN + "/"},
            origin,
        )
        assert session["number"]["e164"] == NUMBER
        leased = asyncio.run(stored_expiry(database_dsn))
        # SIGTERM as soon as the heartbeat is answered: its renewal is still in memory.
        renewed = post(
            url + f"/v1/sessions/{session['session_id']}/heartbeat",
            {"pool_key": pool["public_key"]},
            origin,
        )
        server.stop()
        told = datetime.fromisoformat(renewed["lease_expires_at"])
        assert told > leased
        assert asyncio.run(stored_expiry(database_dsn)) == told, server.output[-3000:]
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
