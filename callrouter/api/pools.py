"""/v1/pools: groups of numbers leased to website visitors, with their lease settings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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
from callrouter.api.fields import CLIENT_ID, TIMESTAMPS, e164, origin, uuid
from callrouter.api.problems import not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE, SESSIONS
from callrouter.api.swap_script import SWAP_SCRIPT
from callrouter.routing.sessions import ATTRIBUTION_MODELS
from callrouter.store.pools import POOLS, Pool, new_public_key

_SETTABLE = (
    Field(
        "allowed_origins",
        "array",
        "Web origins whose pages may use this pool's public key.",
        max_items=50,
        items=Field("origin", "string", "https://host[:port]", max_length=255, check=origin),
    ),
    Field(
        "target_numbers",
        "array",
        "The client's own numbers as written on its pages: the swap script replaces these.",
        max_items=20,
        items=e164("number", "A number on the client's pages."),
    ),
    Field(
        "lease_hold_seconds",
        "integer",
        "How long a number stays with a visitor after the page's last heartbeat.",
        minimum=60,
        maximum=86400,
    ),
    Field(
        "grace_seconds",
        "integer",
        "After a lease ends, calls still go to its last visitor for this long.",
        minimum=0,
        maximum=604800,
    ),
    Field(
        "exhaustion_policy",
        "string",
        "When no number is free out of its grace window. reuse_oldest: the free number "
        "released longest ago, even in its grace; with none released, the number of the "
        "session idle longest (that visit loses it). default_number: the pool's default "
        "number and no lease.",
        choices=("reuse_oldest", "default_number"),
    ),
    uuid("default_number_id", "A number of this client shown when the pool is exhausted."),
    Field(
        "default_source",
        "string",
        "Source for calls that match no visitor.",
        min_length=1,
        max_length=200,
    ),
    Field(
        "form_fields",
        "array",
        "Form field names whose values the swap script may send; other fields are never read.",
        max_items=50,
        items=Field("field", "string", "A form field's name attribute.", max_length=100),
    ),
    Field(
        "attribution_model",
        "string",
        "Which touch a visit's calls and forms are credited to when a visit or a return visit "
        "brings a new campaign: the visitor's first, or their latest that was not direct.",
        choices=ATTRIBUTION_MODELS,
    ),
)
NAME = Field("name", "string", "Pool name, unique per client.", min_length=1, max_length=200)
CREATE = Schema(CLIENT_ID, replace(NAME, required=True), *_SETTABLE)
UPDATE = Schema(NAME, *_SETTABLE)

VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "client_id",
        "name",
        "public_key",
        "allowed_origins",
        "target_numbers",
        "lease_hold_seconds",
        "grace_seconds",
        "exhaustion_policy",
        "default_number_id",
        "default_source",
        "form_fields",
        "attribution_model",
        "swap_script",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "public_key": {"type": "string", "description": "Goes in the swap script tag; not secret."},
        "allowed_origins": {"type": "array", "items": {"type": "string"}},
        "target_numbers": {"type": "array", "items": {"type": "string"}},
        "lease_hold_seconds": {"type": "integer"},
        "grace_seconds": {"type": "integer"},
        "exhaustion_policy": {"type": "string", "enum": ["reuse_oldest", "default_number"]},
        "default_number_id": {"type": ["string", "null"], "format": "uuid"},
        "default_source": {"type": "string"},
        "form_fields": {"type": "array", "items": {"type": "string"}},
        "attribution_model": {"type": "string", "enum": list(ATTRIBUTION_MODELS)},
        "swap_script": {
            "type": "object",
            "description": "The script tag to embed, pinned by Subresource Integrity.",
            "required": ["src", "integrity", "tag"],
            "properties": {
                "src": {"type": "string", "description": "Versioned path, from the API's base."},
                "integrity": {"type": "string", "description": "sha384-..."},
                "tag": {"type": "string", "description": "The tag, src relative to the API."},
            },
        },
        **TIMESTAMPS,
    },
    "additionalProperties": False,
}


def view(pool: Pool) -> dict[str, Any]:
    return {
        "id": pool.id,
        "client_id": pool.client_id,
        "name": pool.name,
        "public_key": pool.public_key,
        "allowed_origins": pool.allowed_origins,
        "target_numbers": pool.target_numbers,
        "lease_hold_seconds": pool.lease_hold_seconds,
        "grace_seconds": pool.grace_seconds,
        "exhaustion_policy": pool.exhaustion_policy,
        "default_number_id": pool.default_number_id,
        "default_source": pool.default_source,
        "form_fields": pool.form_fields,
        "attribution_model": pool.attribution_model,
        "swap_script": {
            "src": SWAP_SCRIPT.path,
            "integrity": SWAP_SCRIPT.integrity,
            "tag": f'<script src="{SWAP_SCRIPT.path}" integrity="{SWAP_SCRIPT.integrity}" '
            f'crossorigin="anonymous" data-pool="{pool.public_key}" async></script>',
        },
        "created_at": pool.created_at,
        "updated_at": pool.updated_at,
    }


async def create(ctx: RequestContext) -> web.Response:
    fields = dict(ctx.body)
    owner = await resolve_owner(ctx, fields.pop("client_id", None))
    pool = await POOLS.insert(
        ctx.app()[DATABASE], {"client_id": owner, "public_key": new_public_key()}, fields
    )
    return json_response(view(pool), 201)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await POOLS.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1)
    return page_response(rows, limit, view)


async def get(ctx: RequestContext) -> web.Response:
    pool = await POOLS.get(ctx.app()[DATABASE], ctx.path_id("pool_id", "pool"), ctx.scope)
    if pool is None:
        raise not_found("pool")
    return json_response(view(pool))


async def update(ctx: RequestContext) -> web.Response:
    pool = await POOLS.update(
        ctx.app()[DATABASE], ctx.path_id("pool_id", "pool"), ctx.scope, ctx.body
    )
    if pool is None:
        raise not_found("pool")
    return json_response(view(pool))


async def delete(ctx: RequestContext) -> web.Response:
    if not await POOLS.delete(ctx.app()[DATABASE], ctx.path_id("pool_id", "pool"), ctx.scope):
        raise not_found("pool")
    return web.Response(status=204)


STATS_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["size", "leased", "peak", "exhaustions", "recommended_size"],
    "properties": {
        "size": {"type": "integer", "description": "Numbers in the pool."},
        "leased": {"type": "integer", "description": "Numbers leased to live visits now."},
        "peak": {"type": "integer", "description": "Most numbers leased at once."},
        "exhaustions": {
            "type": "integer",
            "description": "Visits that found no number free of another visit's grace.",
        },
        "recommended_size": {
            "type": "integer",
            "description": "Numbers for the most visits seen at once, plus a quarter.",
        },
    },
    "additionalProperties": False,
}


async def stats(ctx: RequestContext) -> web.Response:
    pool = await POOLS.get(ctx.app()[DATABASE], ctx.path_id("pool_id", "pool"), ctx.scope)
    service = ctx.app().get(SESSIONS)
    figures = service.stats(pool.id) if pool is not None and service is not None else None
    if pool is None or figures is None:
        raise not_found("pool")
    return json_response(
        {
            "size": figures.size,
            "leased": figures.leased,
            "peak": figures.peak,
            "exhaustions": figures.exhaustions,
            "recommended_size": figures.recommended_size,
        }
    )


ITEM = "/v1/pools/{pool_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/pools",
        create,
        "createPool",
        "Create a number pool",
        "pools",
        body=CREATE,
        response=VIEW,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/v1/pools",
        list_,
        "listPools",
        "List number pools",
        "pools",
        query=PAGE_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint("GET", ITEM, get, "getPool", "Get a number pool", "pools", response=VIEW),
    Endpoint(
        "PATCH",
        ITEM,
        update,
        "updatePool",
        "Change a pool's settings",
        "pools",
        body=UPDATE,
        partial_body=True,
        response=VIEW,
        errors=(409,),
    ),
    Endpoint(
        "DELETE",
        ITEM,
        delete,
        "deletePool",
        "Delete a pool (its numbers become static)",
        "pools",
        status=204,
    ),
    Endpoint(
        "GET",
        ITEM + "/stats",
        stats,
        "getPoolStats",
        "Utilisation of a pool now and at its peak, exhaustions, a recommended size",
        "pools",
        response=STATS_VIEW,
    ),
]
