"""/v1/health (liveness and database reachability) and /v1/ready (readiness: the database and the
media worker are up), for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from callrouter import __version__
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.state import DATABASE, READINESS
from callrouter.store.availability import OUTAGE_ERRORS

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


READY_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["ready", "components"],
    "properties": {
        "ready": {"type": "boolean"},
        "components": {
            "type": "object",
            "description": "Each part a call needs (database, media, sip: taking calls, "
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
        try:
            await ctx.app()[DATABASE].fetchval("SELECT 1", timeout=2)
            components = {"database": True}
        except OUTAGE_ERRORS:
            components = {"database": False}
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
        "Readiness: the database and the media worker are up",
        "health",
        access="public",
        response=READY_VIEW,
        errors=(503,),
    ),
]
