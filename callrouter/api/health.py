"""/v1/health: liveness and database reachability; /v1/ready: whether calls can be served
(database and media worker up), for load balancers and orchestrators.

``recording_space`` says whether new calls are being recorded: "low" while the recordings
filesystem has less than ``[media] min_free_bytes`` free (calls are then connected unrecorded).
It does not make the server unready: calls still route.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from callrouter import __version__
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.state import DATABASE, READINESS, RECORDING_SPACE, Readiness

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


READY_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["status", "database", "media_worker"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "database": {"type": "string", "enum": ["ok", "unreachable"]},
        "media_worker": {"type": "string", "enum": ["ok", "unreachable", "not configured"]},
    },
    "additionalProperties": False,
}


async def _database_up(ctx: RequestContext) -> bool:
    try:
        await ctx.app()[DATABASE].fetchval("SELECT 1", timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


async def ready(ctx: RequestContext) -> web.Response:
    check = ctx.app().get(READINESS)
    found = await check() if check is not None else Readiness(await _database_up(ctx), None)
    worker = {None: "not configured", True: "ok", False: "unreachable"}[found.media_worker]
    up = found.database and found.media_worker is not False
    body = {
        "status": "ready" if up else "not ready",
        "database": "ok" if found.database else "unreachable",
        "media_worker": worker,
    }
    return json_response(body, 200 if up else 503)


async def health(ctx: RequestContext) -> web.Response:
    database = "ok" if await _database_up(ctx) else "unreachable"
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
    Endpoint(
        "GET",
        "/v1/ready",
        ready,
        "getReady",
        "Whether calls can be served: database and media worker up (503 otherwise)",
        "health",
        access="public",
        response=READY_VIEW,
        errors=(503,),
    ),
]
