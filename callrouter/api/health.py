"""/v1/health: liveness and database reachability, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from callrouter import __version__
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.state import DATABASE

VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["status", "database", "version"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "database": {"type": "string", "enum": ["ok", "unreachable"]},
        "version": {"type": "string"},
    },
    "additionalProperties": False,
}


async def health(ctx: RequestContext) -> web.Response:
    try:
        await ctx.app()[DATABASE].fetchval("SELECT 1")
        database = "ok"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        database = "unreachable"
    status = "ok" if database == "ok" else "degraded"
    return json_response(
        {"status": status, "database": database, "version": __version__},
        200 if status == "ok" else 503,
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/health",
        health,
        "getHealth",
        "Health of the server",
        "health",
        access="public",
        response=VIEW,
        errors=(503,),
    ),
]
