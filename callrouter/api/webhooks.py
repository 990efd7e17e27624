"""/v1/webhooks: where a client's events go, the delivery log, and a test-fire route."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from callrouter.api.clients import resolve_owner
from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_response,
    page_schema,
)
from callrouter.api.fields import CLIENT_ID, TIMESTAMPS
from callrouter.api.problems import Problem, not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE, WEBHOOK_SENDER
from callrouter.store.webhooks import DELIVERIES, EVENTS, WEBHOOKS, Delivery, Webhook


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; the signature authenticates us")
    return text


URL = Field("url", "string", "Where events are POSTed.", max_length=2000, check=_url)
EVENT_LIST = Field(
    "events",
    "array",
    "Events to send: " + ", ".join(EVENTS) + ".",
    max_items=len(EVENTS),
    items=Field("event", "string", "An event name.", choices=EVENTS),
)
CREATE = Schema(CLIENT_ID, replace(URL, required=True), replace(EVENT_LIST, required=True))
UPDATE = Schema(URL, EVENT_LIST)

VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["id", "client_id", "url", "events", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string"}},
        **TIMESTAMPS,
    },
    "additionalProperties": False,
}
CREATED: dict[str, Any] = {
    **VIEW,
    "required": [*VIEW["required"], "secret"],
    "properties": {
        **VIEW["properties"],
        "secret": {"type": "string", "description": "Signs deliveries. Shown once."},
    },
}
DELIVERY_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "event",
        "attempts",
        "last_status",
        "last_error",
        "delivered_at",
        "next_attempt_at",
        "created_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "event": {"type": "string"},
        "attempts": {"type": "integer"},
        "last_status": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "delivered_at": {"type": ["string", "null"], "format": "date-time"},
        "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": False,
}


def view(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "client_id": hook.client_id,
        "url": hook.url,
        "events": hook.events,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
    }


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": delivery.delivered_at,
        "next_attempt_at": delivery.next_attempt_at,
        "created_at": delivery.created_at,
    }


async def create(ctx: RequestContext) -> web.Response:
    fields = dict(ctx.body)
    owner = await resolve_owner(ctx, fields.pop("client_id", None))
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = await WEBHOOKS.insert(
        ctx.app()[DATABASE], {"client_id": owner, "secret": secret}, fields
    )
    return json_response({**view(hook), "secret": secret}, 201)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await WEBHOOKS.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1)
    return page_response(rows, limit, view)


async def _hook(ctx: RequestContext) -> Webhook:
    hook = await WEBHOOKS.get(ctx.app()[DATABASE], ctx.path_id("webhook_id", "webhook"), ctx.scope)
    if hook is None:
        raise not_found("webhook")
    return hook


async def get(ctx: RequestContext) -> web.Response:
    return json_response(view(await _hook(ctx)))


async def update(ctx: RequestContext) -> web.Response:
    hook = await WEBHOOKS.update(
        ctx.app()[DATABASE], ctx.path_id("webhook_id", "webhook"), ctx.scope, ctx.body
    )
    if hook is None:
        raise not_found("webhook")
    return json_response(view(hook))


async def delete(ctx: RequestContext) -> web.Response:
    db = ctx.app()[DATABASE]
    if not await WEBHOOKS.delete(db, ctx.path_id("webhook_id", "webhook"), ctx.scope):
        raise not_found("webhook")
    return web.Response(status=204)


async def deliveries(ctx: RequestContext) -> web.Response:
    hook = await _hook(ctx)
    after, limit = page_args(ctx)
    rows = await DELIVERIES.list_page(
        ctx.app()[DATABASE], hook.client_id, after, limit + 1, {"webhook_id": hook.id}
    )
    return page_response(rows, limit, delivery_view)


async def test_fire(ctx: RequestContext) -> web.Response:
    hook = await _hook(ctx)
    sender = ctx.app().get(WEBHOOK_SENDER)
    if sender is None:
        raise Problem(503, "webhooks are not sent by this process")
    await sender.emit_to(hook, "webhook.test", {"message": "a test from callrouter"})
    return web.Response(status=202)


ITEM = "/v1/webhooks/{webhook_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/webhooks",
        create,
        "createWebhook",
        "Register a webhook",
        "webhooks",
        body=CREATE,
        response=CREATED,
        status=201,
    ),
    Endpoint(
        "GET",
        "/v1/webhooks",
        list_,
        "listWebhooks",
        "List webhooks",
        "webhooks",
        query=PAGE_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint("GET", ITEM, get, "getWebhook", "Get a webhook", "webhooks", response=VIEW),
    Endpoint(
        "PATCH",
        ITEM,
        update,
        "updateWebhook",
        "Change a webhook",
        "webhooks",
        body=UPDATE,
        partial_body=True,
        response=VIEW,
    ),
    Endpoint("DELETE", ITEM, delete, "deleteWebhook", "Delete a webhook", "webhooks", status=204),
    Endpoint(
        "GET",
        ITEM + "/deliveries",
        deliveries,
        "listWebhookDeliveries",
        "The delivery log of a webhook, oldest first",
        "webhooks",
        query=PAGE_QUERY,
        response=page_schema(DELIVERY_VIEW),
    ),
    Endpoint(
        "POST",
        ITEM + "/test",
        test_fire,
        "testWebhook",
        "Send a webhook.test event to this webhook now",
        "webhooks",
        status=202,
        errors=(503,),
    ),
]
