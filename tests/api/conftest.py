"""An in-process API on a real loopback socket, over a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callrouter.api.auth import Authenticator
from callrouter.api.server import build_api
from callrouter.ratelimit import TokenBuckets
from callrouter.routing.sessions import Sessions
from callrouter.store import api_keys
from callrouter.store.database import create_pool
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


async def start_api(dsn: str, *, rate: float = 1000.0, burst: int = 1000) -> tuple[Api, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=4)
    authenticator = Authenticator(pool, TokenBuckets(rate, burst), TokenBuckets(1.0, 20))
    clock = FakeClock()
    sessions = Sessions(pool, clock)
    webhooks = WebhookSender(pool, allow_private=True, retry_base=0.01)
    app = build_api(
        pool,
        authenticator,
        max_body_bytes=MAX_BODY,
        visitor_sessions=sessions,
        public_rate=TokenBuckets(rate, burst),
        webhook_sender=webhooks,
    )
    http = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    _, secret = await api_keys.create(pool, None, "test operator")
    return Api(http, pool, secret, sessions, clock, webhooks), pool


@pytest.fixture
async def api(database_dsn: str) -> AsyncIterator[Api]:
    api, pool = await start_api(database_dsn)
    try:
        yield api
    finally:
        await api.http.close()
        await pool.close()
