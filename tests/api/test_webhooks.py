"""Webhooks: registration, signed deliveries to a real receiver, retries and the delivery log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from callrouter.store.notifications import Notifications
from callrouter.webhooks import SIGNATURE_HEADER, WebhookSender
from tests.api.conftest import Api


class Receiver:
    """A client's endpoint: records each delivery; answers 500 to the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await self.received.put((dict(request.headers), body))
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500)
        return web.Response(status=204)


@pytest.fixture
async def receiver(api: Api) -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver(failures=1)
    app = web.Application()
    app.router.add_post("/hooks", target.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sender = asyncio.create_task(api.webhooks.run())
    try:
        yield target, str(server.make_url("/hooks"))
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await server.close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """The recipe in the README: recompute HMAC-SHA256 over "<t>.<body>"."""
    parts = dict(item.split("=", 1) for item in headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())


async def test_events_are_signed_retried_and_logged(
    api: Api, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    client_id, key = await api.client_with_key("Acme")
    hook = await api.ok("POST", "/v1/webhooks", key, {"url": url, "events": ["form.submitted"]})
    assert hook["secret"].startswith("whsec_")
    assert "secret" not in await api.ok("GET", f"/v1/webhooks/{hook['id']}", key)

    await api.webhooks.emit(UUID(client_id), "form.submitted", {"form": "contact"})
    await api.webhooks.emit(UUID(client_id), "call.completed", {"ignored": True})
    first_headers, first_body = await asyncio.wait_for(target.received.get(), 30)
    headers, body = await asyncio.wait_for(target.received.get(), 30)  # the retry after a 500
    assert (
        body == first_body
        and headers["Callrouter-Delivery"] == first_headers["Callrouter-Delivery"]
    )
    verify(hook["secret"], headers, body)
    event: dict[str, Any] = json.loads(body)
    assert (event["event"], event["data"]) == ("form.submitted", {"form": "contact"})

    await asyncio.wait_for(api.webhooks.recorded(2), 30)
    log = await api.ok("GET", f"/v1/webhooks/{hook['id']}/deliveries", key)
    (delivery,) = log["data"]  # call.completed was not asked for
    assert delivery["attempts"] == 2 and delivery["last_status"] == 204
    assert delivery["delivered_at"] is not None and delivery["next_attempt_at"] is None


async def test_test_fire_reaches_the_endpoint(api: Api, receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    target.failures = 0
    _, key = await api.client_with_key("Acme")
    hook = await api.ok("POST", "/v1/webhooks", key, {"url": url, "events": ["call.completed"]})
    reply = await api.call("POST", f"/v1/webhooks/{hook['id']}/test", key)
    assert reply.status == 202
    headers, body = await asyncio.wait_for(target.received.get(), 30)
    verify(hook["secret"], headers, body)
    assert json.loads(body)["event"] == "webhook.test"


async def test_bad_webhooks_are_refused(api: Api) -> None:
    _, key = await api.client_with_key("Acme")
    reply = await api.call(
        "POST", "/v1/webhooks", key, {"url": "ftp://x.example", "events": ["call.done"]}
    )
    assert reply.status == 422
    fields = {e["field"] for e in reply.body["errors"]}
    assert fields == {"url", "events[0]"}


async def test_endpoints_on_private_addresses_are_never_called(api: Api) -> None:
    """A sender as serve runs it (no private destinations): a URL naming a loopback address, or
    a name that resolves to one, is refused before any connection; the attempt's error says
    why. The resolver that refuses is the one that connects, so no second answer (DNS
    rebinding) can slip between a check and the connection."""
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", target.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sender = WebhookSender(api.db, retry_base=3600)
    running = asyncio.create_task(sender.run())
    try:
        client_id, key = await api.client_with_key("Acme")
        hooks = {}
        for url in (str(server.make_url("/hooks")), f"http://localhost:{server.port}/hooks"):
            hook = await api.ok(
                "POST", "/v1/webhooks", key, {"url": url, "events": ["form.submitted"]}
            )
            hooks[url] = hook["id"]
        await sender.emit(UUID(client_id), "form.submitted", {"form": "contact"})
        await asyncio.wait_for(sender.recorded(2), 30)
        errors = {}
        for url, hook_id in hooks.items():
            (delivery,) = (await api.ok("GET", f"/v1/webhooks/{hook_id}/deliveries", key))["data"]
            assert delivery["delivered_at"] is None
            errors[url] = delivery["last_error"]
        literal, name = errors.values()
        assert "127.0.0.1 is not a public address" in literal
        assert "localhost resolves to no public address" in name
        assert target.received.empty()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await server.close()


async def test_an_event_no_webhook_wants_costs_no_query_and_new_webhooks_are_heard_of(
    api: Api, database_dsn: str
) -> None:
    looked_up: list[str] = []

    def note(record: Any) -> None:
        if "FROM webhooks WHERE" in record.query:
            looked_up.append(record.query)

    async def init(connection: asyncpg.Connection[Any]) -> None:
        await connection.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        connection.add_query_logger(note)

    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2, init=init)
    listener = Notifications(database_dsn)
    await listener.connect()
    try:
        sender = WebhookSender(pool)
        await sender.watch(listener)
        client_id, key = await api.client_with_key("Acme")
        client = UUID(client_id)
        await sender.emit(client, "call.started", {"call_id": "first"})
        assert looked_up == []  # nobody wants it: no query

        reads = sender.reloads
        hook = await api.ok(
            "POST",
            "/v1/webhooks",
            key,
            {"url": "https://hooks.example/", "events": ["call.started"]},
        )
        await asyncio.wait_for(sender.reloaded(reads + 1), 30)  # the NOTIFY, heard
        await sender.emit(client, "call.started", {"call_id": "second"})
        await sender.emit(client, "call.answered", {"call_id": "second"})  # not asked for
        assert len(looked_up) == 1
        log = await api.ok("GET", f"/v1/webhooks/{hook['id']}/deliveries", key)
        assert [d["event"] for d in log["data"]] == ["call.started"]
    finally:
        await listener.close()
        await pool.close()
