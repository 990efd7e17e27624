"""An in-process API on a real loopback socket, over a real PostgreSQL database, with privacy
rights keyed by a secret in a private temp directory (so the privacy routes are served)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callrouter.api.auth import Authenticator
from callrouter.api.server import build_api
from callrouter.config import load_config
from callrouter.privacy.rights import PrivacyRights
from callrouter.ratelimit import TokenBuckets
from callrouter.recordings import Recordings
from callrouter.routing.sessions import Sessions
from callrouter.store import api_keys
from callrouter.store.database import create_pool
from callrouter.vault import Vault
from callrouter.webhooks import WebhookSender

MAX_BODY = 16 * 1024


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    now: float = 1_795_600_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    """A client for the API under test, plus the database and the visitor sessions behind it."""

    http: TestClient[Any, Any]
    db: asyncpg.Pool[asyncpg.Record]
    operator_key: str
    sessions: Sessions
    clock: FakeClock
    webhooks: WebhookSender
    recordings: Recordings

    async def call(
        self, method: str, path: str, key: str | None = None, json: Any = None, **kwargs: Any
    ) -> Reply:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, path, json=json, headers=headers, **kwargs) as resp:
            text = await resp.text()
            body = await resp.json(content_type=None) if text else None
            return Reply(resp.status, body, dict(resp.headers))

    async def ok(self, method: str, path: str, key: str | None = None, json: Any = None) -> Any:
        """Call and insist on a 2xx; return the body."""
        reply = await self.call(method, path, key or self.operator_key, json)
        assert 200 <= reply.status < 300, (reply.status, reply.body)
        return reply.body

    async def client_with_key(self, name: str) -> tuple[str, str]:
        """(client id, client key) for a new client."""
        client = await self.ok("POST", "/v1/clients", json={"name": name})
        key = await self.ok("POST", "/v1/keys", json={"client_id": client["id"], "name": "test"})
        return client["id"], key["secret"]


@asynccontextmanager
async def running_api(dsn: str, *, rate: float = 1000.0, burst: int = 1000) -> AsyncIterator[Api]:
    """The API, stopped and its data directory (the privacy secret) removed on exit."""
    data_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="callrouter-api-"))
    try:
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            config = load_config(
                None,
                {},
                {"data_dir": str(data_dir), "recordings_dir": str(data_dir / "recordings")},
            )
            webhooks = WebhookSender(pool, allow_private=True, retry_base=0.01)
            recordings = Recordings(pool, Vault.from_config(config), config.recordings_dir)
            rights = await PrivacyRights.open(pool, config, archive=recordings)
            authenticator = Authenticator(pool, TokenBuckets(rate, burst), TokenBuckets(1.0, 20))
            clock = FakeClock()
            sessions = Sessions(pool, clock)
            app = build_api(
                pool,
                authenticator,
                max_body_bytes=MAX_BODY,
                visitor_sessions=sessions,
                public_rate=TokenBuckets(rate, burst),
                webhook_sender=webhooks,
                privacy_rights=rights,
                recordings_service=recordings,
            )
            http = TestClient(TestServer(app, host="127.0.0.1"))
            await http.start_server()
            try:
                _, secret = await api_keys.create(pool, None, "test operator")
                yield Api(http, pool, secret, sessions, clock, webhooks, recordings)
            finally:
                await http.close()
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(shutil.rmtree, data_dir, ignore_errors=True)


@pytest.fixture
async def api(database_dsn: str) -> AsyncIterator[Api]:
    async with running_api(database_dsn) as api:
        yield api
