"""/v1/clients: the operator's customers."""

from __future__ import annotations

from datetime import UTC, datetime
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
from callrouter.privacy import audit
from callrouter.store.clients import CLIENTS, Client
from callrouter.store.database import Executor
from callrouter.store.privacy import transaction

CLIENT_DELETED = "client.deleted"
"""The audit action of a client's deletion, with everything it owned."""

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


async def _lock_and_count(db: Executor, client_id: UUID) -> dict[str, int] | None:
    """Lock the client row and count the personal data its deletion removes; None when there
    is no such client. The lock holds back new rows that would name the client (their foreign
    key check waits on it), so the counts are what the cascade deletes."""
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM calls WHERE client_id = c.id) AS calls,
                  (SELECT count(*) FROM recordings WHERE client_id = c.id) AS recordings,
                  (SELECT count(*) FROM sessions WHERE client_id = c.id) AS sessions,
                  (SELECT count(*) FROM forms WHERE client_id = c.id) AS forms
           FROM clients c WHERE c.id = $1 FOR UPDATE OF c""",
        client_id,
    )
    return dict(row) if row is not None else None


async def delete(ctx: RequestContext) -> web.Response:
    assert ctx.principal is not None
    client_id = ctx.path_id("client_id", "client")
    async with transaction(ctx.app()[DATABASE]) as connection:
        counts = await _lock_and_count(connection, client_id)
        if counts is None or not await CLIENTS.delete(connection, client_id, None):
            raise not_found("client")
        # Its recordings' keys and files are queued for shredding by the same commit
        # (migration 0007); the audit entry outlives the client (it has no foreign key).
        await audit.record(
            connection,
            at=datetime.now(UTC),
            actor=audit.key_actor(ctx.principal.key_id),
            action=CLIENT_DELETED,
            counts=counts,
            client_id=client_id,
        )
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
