"""/v1/health: liveness and database reachability, for load balancers and orchestrators.

``recording_space`` says whether new calls are being recorded: "low" while the recordings
filesystem has less than ``[media] min_free_bytes`` free (calls are then connected unrecorded).
It does not make the server unhealthy: calls still route.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from callrouter import __version__
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.state import DATABASE, RECORDING_SPACE

VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["status", "database", "version", "recording_space"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "database": {"type": "string", "enum": ["ok", "unreachable"]},
        "version": {"type": "string"},
        "recording_space": {
            "type": ["object", "null"],
            "description": "Free space for recordings; null when this server does not record.",
            "required": ["status", "free_bytes", "min_free_bytes"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "low", "unknown"]},
                "free_bytes": {"type": ["integer", "null"]},
                "min_free_bytes": {"type": "integer"},
            },
            "additionalProperties": False,
        },
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
    space = ctx.app().get(RECORDING_SPACE)
    return json_response(
        {
            "status": status,
            "database": database,
            "version": __version__,
            "recording_space": space.view() if space is not None else None,
        },
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
