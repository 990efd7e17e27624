"""/v1/health (liveness and database reachability) and /v1/ready (readiness: every part a call
needs is up), for load balancers and orchestrators.

``recording_space`` in /v1/health says whether new calls are being recorded: "low" while the
recordings filesystem has less than ``[media] min_free_bytes`` free (calls are then connected
unrecorded); /v1/ready reports it as a part that is down.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from callrouter import __version__
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.state import DATABASE, READINESS, RECORDING_SPACE
from callrouter.store.availability import OUTAGE_ERRORS

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


async def _database_up(ctx: RequestContext) -> bool:
    try:
        await ctx.app()[DATABASE].fetchval("SELECT 1", timeout=2)
    except OUTAGE_ERRORS:
        return False
    return True


async def health(ctx: RequestContext) -> web.Response:
    database = "ok" if await _database_up(ctx) else "unreachable"
    status = "ok" if database == "ok" else "degraded"
    space = ctx.app().get(RECORDING_SPACE)
    # Liveness: the process answers, so 200 even while the database is away (calls still route
    # from memory, and an orchestrator must not restart a server for its database's outage).
    return json_response(
        {
            "status": status,
            "database": database,
            "version": __version__,
            "recording_space": space.view() if space is not None else None,
        }
    )


READY_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["ready", "components"],
    "properties": {
        "ready": {"type": "boolean"},
        "components": {
            "type": "object",
            "description": "Each part a call needs (database; media: the worker answers; "
            "recording_space: at least min_free_bytes free; journal: call events can be kept, "
            "not so many held in memory only that new calls are refused; sip: taking calls, "
            "not draining for a shutdown) and whether it is up.",
            "additionalProperties": {"type": "string", "enum": ["up", "down"]},
        },
    },
    "additionalProperties": False,
}


async def ready(ctx: RequestContext) -> web.Response:
    """200 when every part is up; 503 naming the parts that are not (with Retry-After)."""
    readiness = ctx.app().get(READINESS)
    if readiness is not None:
        components = await readiness.check()
    else:
        components = {"database": await _database_up(ctx)}
    up = all(components.values())
    response = json_response(
        {"ready": up, "components": {k: "up" if v else "down" for k, v in components.items()}},
        200 if up else 503,
    )
    if not up:
        response.headers["Retry-After"] = "5"
    return response


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
        "Readiness: the database, the media worker, recording space, the call journal and SIP "
        "are up",
        "health",
        access="public",
        response=READY_VIEW,
        errors=(503,),
    ),
]
