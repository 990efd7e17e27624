"""/v1/clients: the operator's customers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from callrouter.api.auth import AUTHENTICATOR
from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_response,
    page_schema,
)
from callrouter.api.fields import TIMESTAMPS
from callrouter.api.problems import invalid, not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE
from callrouter.store.clients import CLIENTS, Client

NAME = Field("name", "string", "Display name.", required=True, min_length=1, max_length=200)
CREATE = Schema(NAME)
UPDATE = Schema(NAME)

VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        **TIMESTAMPS,
    },
    "additionalProperties": False,
}


def view(client: Client) -> dict[str, Any]:
    return {
        "id": client.id,
        "name": client.name,
        "created_at": client.created_at,
        "updated_at": client.updated_at,
    }


async def resolve_owner(ctx: RequestContext, requested: UUID | None) -> UUID:
    """The client a new object belongs to.

    An operator must name an existing client; a client key may only name itself. Both mistakes
    get the same answer, so a client learns nothing about other clients' ids.
    """
    scope = ctx.scope
    if scope is not None:
        if requested is not None and requested != scope:
            raise invalid("client_id", "unknown client")
        return scope
    if requested is None:
        raise invalid("client_id", "is required with an operator key")
    if await CLIENTS.get(ctx.app()[DATABASE], requested, None) is None:
        raise invalid("client_id", "unknown client")
    return requested


async def create(ctx: RequestContext) -> web.Response:
    client = await CLIENTS.insert(ctx.app()[DATABASE], {}, ctx.body)
    return json_response(view(client), 201)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await CLIENTS.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1)
    return page_response(rows, limit, view)


async def get(ctx: RequestContext) -> web.Response:
    client = await CLIENTS.get(ctx.app()[DATABASE], ctx.path_id("client_id", "client"), ctx.scope)
    if client is None:
        raise not_found("client")
    return json_response(view(client))


async def update(ctx: RequestContext) -> web.Response:
    client_id = ctx.path_id("client_id", "client")
    client = await CLIENTS.update(ctx.app()[DATABASE], client_id, ctx.scope, ctx.body)
    if client is None:
        raise not_found("client")
    return json_response(view(client))


async def delete(ctx: RequestContext) -> web.Response:
    client_id = ctx.path_id("client_id", "client")
    if not await CLIENTS.delete(ctx.app()[DATABASE], client_id, None):
        raise not_found("client")
    # Its keys are deleted with it (cascade); other processes hear of each through the trigger
    # of migration 0005, this one forgets them now.
    ctx.app()[AUTHENTICATOR].forget_client(client_id)
    return web.Response(status=204)


ITEM = "/v1/clients/{client_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/clients",
        create,
        "createClient",
        "Create a client",
        "clients",
        access="operator",
        body=CREATE,
        response=VIEW,
        status=201,
    ),
    Endpoint(
        "GET",
        "/v1/clients",
        list_,
        "listClients",
        "List clients (a client key sees itself)",
        "clients",
        query=PAGE_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint("GET", ITEM, get, "getClient", "Get a client", "clients", response=VIEW),
    Endpoint(
        "PATCH",
        ITEM,
        update,
        "updateClient",
        "Rename a client",
        "clients",
        body=UPDATE,
        partial_body=True,
        response=VIEW,
    ),
    Endpoint(
        "DELETE",
        ITEM,
        delete,
        "deleteClient",
        "Delete a client and everything it owns",
        "clients",
        access="operator",
        status=204,
    ),
]
