"""The swap script's API: sessions, heartbeats, form submissions and swap.js itself.

These routes are public: the page carries the pool's public key, not a secret. What the key
allows is bounded by the pool's allowed origins (checked on every request, with CORS answers
for browsers), a per-address rate limit and small bodies.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from callrouter.api import swap_script
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.problems import Problem, not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE, PUBLIC_RATE, SESSIONS, WEBHOOK_SENDER
from callrouter.numbering import number_parts
from callrouter.routing.sessions import LivePool, Sessions, Visit
from callrouter.store import sessions as session_store
from callrouter.store.ids import new_id

HEARTBEAT_SECONDS = 60
CORS_PATHS = ("/v1/sessions", "/v1/forms")

POOL_KEY = Field(
    "pool_key", "string", "The pool's public key (data-pool).", required=True, max_length=64
)
CREATE = Schema(
    POOL_KEY,
    Field(
        "visitor_id",
        "string",
        "First-party visitor id, to give a visitor back their number.",
        nullable=True,
        max_length=100,
    ),
    Field(
        "page_url",
        "string",
        "The page, with its campaign parameters.",
        required=True,
        max_length=2000,
    ),
    Field("referrer", "string", "document.referrer.", nullable=True, max_length=2000),
    Field(
        "title",
        "string",
        "document.title, for the visit's journey.",
        nullable=True,
        max_length=1000,
    ),
)
TOUCH = Schema(POOL_KEY)
# What the swap script sends on every heartbeat and page close, its key as pools.new_public_key
# makes it: JSON's own whitespace only (``\s`` would let through the form feed JSON refuses).
_JSON_SPACE = rb"[ \t\n\r]*"
_TOUCH_BODY = re.compile(
    rb'\s*\{\s*"pool_key"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*\}\s*'.replace(rb"\s*", _JSON_SPACE)
)


def touch_body(raw: bytes) -> dict[str, Any] | None:
    """A heartbeat's or page close's body, ``{"pool_key": "..."}``, parsed without the general
    decoder and schema (0.4-0.9 µs against their 1.9-3.9 on this machine); None for any other
    body, which then takes that path and its answers."""
    match = _TOUCH_BODY.fullmatch(raw)
    return {"pool_key": match[1].decode("ascii")} if match else None


FORM = Schema(
    POOL_KEY,
    Field(
        "session_id",
        "string",
        "The session that showed the page.",
        required=True,
        format="uuid",
        max_length=36,
    ),
    Field("form", "string", "The form's id or name.", required=True, min_length=1, max_length=200),
    Field("page_url", "string", "Where it was submitted.", nullable=True, max_length=2000),
    Field(
        "fields",
        "object",
        "Values of the pool's listed form fields.",
        max_properties=50,
        values=Field("value", "string", "A field value.", max_length=2000),
    ),
)

_NUMBER: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        **{
            k: {"type": "string"}
            for k in ("e164", "national", "international", "country_code", "nsn", "trunk_prefix")
        },
        "groups": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The national significant number's digit groups.",
        },
    },
}
SESSION_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "session_id",
        "number",
        "targets",
        "heartbeat_seconds",
        "lease_expires_at",
        "form_fields",
    ],
    "properties": {
        "session_id": {"type": "string", "format": "uuid"},
        "number": _NUMBER,
        "targets": {"type": "array", "items": _NUMBER},
        "heartbeat_seconds": {"type": "integer"},
        "lease_expires_at": {"type": ["string", "null"], "format": "date-time"},
        "form_fields": {"type": "array", "items": {"type": "string"}},
    },
}
TOUCH_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["lease_expires_at"],
    "properties": {"lease_expires_at": {"type": ["string", "null"], "format": "date-time"}},
}


def _sessions(ctx: RequestContext) -> Sessions:
    service = ctx.app().get(SESSIONS)
    if service is None:
        raise Problem(503, "visitor sessions are not served by this process")
    return service


def _admit(ctx: RequestContext, sessions: Sessions) -> LivePool:
    """The pool named by the body's key, if this address is within its rate and the page's
    origin is one the pool allows."""
    request = ctx.request
    wait = request.app[PUBLIC_RATE].take(request.remote or "unknown", time.time())
    if wait > 0:
        raise Problem(
            429,
            "too many requests from this address",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    live = sessions.pool_by_key(ctx.body["pool_key"])
    if live is None:
        raise Problem(404, "no pool with this key")
    allowed = live.pool.allowed_origins
    if allowed:
        origin = request.headers.get("Origin")
        if origin not in allowed:
            raise Problem(403, f"origin {origin or '(none)'} may not use this pool")
    return live


def _parts(e164: str | None) -> Mapping[str, Any] | None:
    return _number_view(e164) if e164 else None


@functools.lru_cache(maxsize=65_536)
def _number_view(e164: str) -> Mapping[str, Any]:
    """A number as answers show it, built once per number (every page view shows its pool's);
    shared, so only read (serialised)."""
    return asdict(number_parts(e164))


async def create(ctx: RequestContext) -> web.Response:
    sessions = _sessions(ctx)
    live = _admit(ctx, sessions)
    visit, shown = await sessions.start(
        live,
        visitor_id=ctx.body.get("visitor_id"),
        page_url=ctx.body["page_url"],
        referrer=ctx.body.get("referrer"),
        user_agent=ctx.request.headers.get("User-Agent"),
        ip=ctx.request.remote,
        title=ctx.body.get("title"),
    )
    return json_response(
        {
            "session_id": visit.record.id,
            "number": _parts(shown),
            "targets": [_parts(t) for t in live.pool.target_numbers],
            "heartbeat_seconds": HEARTBEAT_SECONDS,
            "lease_expires_at": visit.record.lease_expires_at,
            "form_fields": live.pool.form_fields,
        },
        201,
    )


async def _own_visit(sessions: Sessions, live: LivePool, session_id: uuid.UUID) -> Visit:
    visit = sessions.known(session_id) or await sessions.visit(session_id)
    if visit is None or visit.record.pool_id != live.pool.id:
        raise not_found("session")
    return visit


async def heartbeat(ctx: RequestContext) -> web.Response:
    sessions = _sessions(ctx)
    live = _admit(ctx, sessions)
    session_id = ctx.path_id("session_id", "session")
    await _own_visit(sessions, live, session_id)
    visit = await sessions.heartbeat(session_id)
    if visit is None:
        raise not_found("session")
    return json_response({"lease_expires_at": visit.record.lease_expires_at})


async def end(ctx: RequestContext) -> web.Response:
    sessions = _sessions(ctx)
    live = _admit(ctx, sessions)
    session_id = ctx.path_id("session_id", "session")
    await _own_visit(sessions, live, session_id)
    await sessions.end(session_id)
    return web.Response(status=204)


async def submit_form(ctx: RequestContext) -> web.Response:
    sessions = _sessions(ctx)
    live = _admit(ctx, sessions)
    session_id = uuid.UUID(ctx.body["session_id"])
    visit = await _own_visit(sessions, live, session_id)
    # Only the fields the client listed are kept, whatever a page sends.
    listed = set(live.pool.form_fields)
    fields = {k: v for k, v in (ctx.body.get("fields") or {}).items() if k in listed}
    form_id = new_id()
    at = datetime.fromtimestamp(sessions.clock(), UTC)  # the clock its session's times use
    await session_store.insert_form(
        ctx.app()[DATABASE],
        form_id=form_id,
        session=visit.record,
        form=ctx.body["form"],
        fields=fields,
        page=ctx.body.get("page_url"),
        at=at,
    )
    sender = ctx.app().get(WEBHOOK_SENDER)
    if sender is not None:
        await sender.emit(
            visit.record.client_id,
            "form.submitted",
            {
                "form_id": form_id,
                "session_id": visit.record.id,
                "form": ctx.body["form"],
                "fields": fields,
                "page_url": ctx.body.get("page_url"),
                "attribution": visit.record.attribution,
                "submitted_at": at,
            },
        )
    return json_response({"id": form_id}, 201)


def is_cors(path: str) -> bool:
    """Whether browsers may call ``path`` from any page (the handlers decide per pool)."""
    return path.startswith(CORS_PATHS)


def preflight() -> web.Response:
    """The answer to a CORS preflight: it carries no body, so no pool to decide by."""
    return web.Response(status=204, headers=_PREFLIGHT)


_PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


def allow_origin(origin: str | None, response: web.StreamResponse) -> None:
    """Every answer of a CORS path, errors included, carries the page's origin so the script
    can read why it failed."""
    # Bytes that are not ASCII cannot be an origin, nor be written back in a header.
    if origin and origin.isascii():
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


SESSION = "/v1/sessions/{session_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/sessions",
        create,
        "createSession",
        "Start a visitor session and lease it a number",
        "sessions",
        access="public",
        body=CREATE,
        response=SESSION_VIEW,
        status=201,
        errors=(403, 404, 429, 503),
    ),
    Endpoint(
        "POST",
        SESSION + "/heartbeat",
        heartbeat,
        "heartbeatSession",
        "Keep a session's number while the page is open",
        "sessions",
        access="public",
        body=TOUCH,
        body_shortcut=touch_body,
        response=TOUCH_VIEW,
        errors=(403, 404, 429, 503),
    ),
    Endpoint(
        "POST",
        SESSION + "/end",
        end,
        "endSession",
        "The page was closed; the number is held for the pool's hold time",
        "sessions",
        access="public",
        body=TOUCH,
        body_shortcut=touch_body,
        status=204,
        errors=(403, 404, 429, 503),
    ),
    Endpoint(
        "POST",
        "/v1/forms",
        submit_form,
        "submitForm",
        "Record a form submission of a session",
        "sessions",
        access="public",
        body=FORM,
        response={
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string", "format": "uuid"}},
        },
        status=201,
        errors=(403, 404, 429, 503),
    ),
    Endpoint(
        "GET",
        "/v1/swap.js",
        swap_script.serve_current,
        "getSwapScript",
        "The current swap script (cached an hour, revalidated by its ETag)",
        "sessions",
        access="public",
        response_type="application/javascript",
        extra_responses={304: "Not modified: If-None-Match names this build."},
        description="gzip or br when Accept-Encoding allows. Pages that pin the script with an "
        "integrity hash use the versioned URL instead (the pool's swap_script).",
    ),
    Endpoint(
        "GET",
        "/v1/swap/{version}.js",
        swap_script.serve_versioned,
        "getSwapScriptVersion",
        "One build of the swap script, cacheable for a year (immutable)",
        "sessions",
        access="public",
        response_type="application/javascript",
        errors=(404,),
        extra_responses={304: "Not modified: If-None-Match names this build."},
        description="Only the current build is served; another version is a 404, so a page "
        "never gets bytes other than those its integrity hash pinned.",
    ),
]
