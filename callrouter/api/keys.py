"""/v1/keys: API keys. The secret is in the creation response only; it is stored hashed."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from callrouter.api.auth import AUTHENTICATOR
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
from callrouter.api.fields import uuid
from callrouter.api.problems import not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE
from callrouter.store import api_keys
from callrouter.store.api_keys import API_KEYS, ApiKey

log = logging.getLogger(__name__)

CREATE = Schema(
    uuid(
        "client_id",
        "The client the key acts for. With an operator key, omit it (or send null) to create "
        "another operator key; a client key can only create keys for its own client.",
    ),
    Field("name", "string", "What the key is for.", max_length=200),
)

VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["id", "client_id", "name", "prefix", "created_at", "revoked_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": ["string", "null"], "format": "uuid"},
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "The key's first characters, to recognise it."},
        "created_at": {"type": "string", "format": "date-time"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
    },
    "additionalProperties": False,
}
CREATED: dict[str, Any] = {
    **VIEW,
    "required": [*VIEW["required"], "secret"],
    "properties": {
        **VIEW["properties"],
        "secret": {"type": "string", "description": "The key itself. Shown once: store it now."},
    },
}


def view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "client_id": key.client_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


async def create(ctx: RequestContext) -> web.Response:
    requested = ctx.body.get("client_id")
    owner = None if ctx.scope is None and requested is None else await resolve_owner(ctx, requested)
    key, secret = await api_keys.create(ctx.app()[DATABASE], owner, ctx.body.get("name", ""))
    return json_response({**view(key), "secret": secret}, 201)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await API_KEYS.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1)
    return page_response(rows, limit, view)


async def get(ctx: RequestContext) -> web.Response:
    key = await API_KEYS.get(ctx.app()[DATABASE], ctx.path_id("key_id", "key"), ctx.scope)
    if key is None:
        raise not_found("key")
    return json_response(view(key))


async def revoke(ctx: RequestContext) -> web.Response:
    db = ctx.app()[DATABASE]
    key = await api_keys.revoke(db, ctx.path_id("key_id", "key"), ctx.scope)
    if key is None:
        raise not_found("key")
    ctx.app()[AUTHENTICATOR].forget(key.id)
    by = ctx.principal.key_id if ctx.principal else None
    log.info(
        "keys: revoked key %s (by key %s)",
        key.id,
        by,
        extra={"event": "key.revoked", "key_id": str(key.id), "by_key_id": str(by)},
    )
    return web.Response(status=204)


ITEM = "/v1/keys/{key_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/keys",
        create,
        "createKey",
        "Create an API key",
        "keys",
        body=CREATE,
        response=CREATED,
        status=201,
    ),
    Endpoint(
        "GET",
        "/v1/keys",
        list_,
        "listKeys",
        "List API keys",
        "keys",
        query=PAGE_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint("GET", ITEM, get, "getKey", "Get an API key's public facts", "keys", response=VIEW),
    Endpoint("DELETE", ITEM, revoke, "revokeKey", "Revoke an API key", "keys", status=204),
]
