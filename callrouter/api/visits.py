"""Reading visits back: GET /v1/sessions and /v1/forms with a client's (or the operator's) key.

The swap script writes sessions and forms through the public routes in ``api.sessions``; these
routes let the client see them directly: a visit's attribution, both touches, its journey, its
number and what it led to, read from PostgreSQL (each page view is written before the page gets
its answer).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_response,
    page_schema,
)
from callrouter.api.fields import timestamp, uuid
from callrouter.api.problems import not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE
from callrouter.numbering import number_parts
from callrouter.store import sessions as session_store
from callrouter.store.sessions import Form, SessionFilter, SessionRecord

LIST_QUERY = Schema(
    *PAGE_QUERY.fields,
    uuid("pool_id", "Only sessions of this pool.", nullable=False),
    timestamp("from", "Sessions that started at or after this time."),
    timestamp("to", "Sessions that started before this time."),
    Field("source", "string", "Only sessions credited to this source.", max_length=200),
    Field("campaign", "string", "Only sessions credited to this campaign.", max_length=200),
    Field("has_call", "boolean", "true: only sessions that led to a call; false: only others."),
)
FORMS_QUERY = Schema(
    *PAGE_QUERY.fields,
    uuid("session_id", "Only forms of this session.", nullable=False),
    timestamp("from", "Forms submitted at or after this time."),
    timestamp("to", "Forms submitted before this time."),
)

_TIME = {"type": "string", "format": "date-time"}
_FACTS = {
    "type": "object",
    "description": "source, medium, campaign, utm_*, click ids, referrer, landing_page (and, "
    "for a touch, at: when it happened).",
}
PAGE_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["url", "title", "at"],
    "properties": {
        "url": {"type": ["string", "null"], "description": "Without query or fragment."},
        "title": {"type": ["string", "null"]},
        "at": _TIME,
    },
}
TOUCHES: dict[str, Any] = {
    "type": "object",
    "description": "first: the visitor's first touch; last: their latest non-direct touch.",
    "properties": {"first": _FACTS, "last": _FACTS},
}
JOURNEY: dict[str, Any] = {
    "type": "array",
    "description": "The visit's page views, oldest first (the last 50).",
    "items": PAGE_VIEW,
}
_SESSION_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"},
    "client_id": {"type": "string", "format": "uuid"},
    "pool_id": {"type": "string", "format": "uuid"},
    "visitor_id": {"type": ["string", "null"]},
    "number": {
        "type": ["object", "null"],
        "description": "The tracking number the visit was shown (null: the pool's default).",
        "properties": {k: {"type": "string"} for k in ("e164", "national", "international")},
    },
    "attribution": {**_FACTS, "description": "The touch its calls and forms are credited to."},
    "touches": TOUCHES,
    "journey": JOURNEY,
    "created_at": _TIME,
    "last_seen_at": _TIME,
    "lease_expires_at": {"type": ["string", "null"], "format": "date-time"},
    "ended": {"type": "boolean", "description": "The last page was closed."},
}
SESSION_ITEM: dict[str, Any] = {
    "type": "object",
    "required": list(_SESSION_PROPERTIES),
    "properties": _SESSION_PROPERTIES,
    "additionalProperties": False,
}
SESSION_DETAIL: dict[str, Any] = {
    "type": "object",
    "required": [*_SESSION_PROPERTIES, "call_ids", "form_ids"],
    "properties": {
        **_SESSION_PROPERTIES,
        "call_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
        "form_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
    },
    "additionalProperties": False,
}
FORM_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "client_id",
        "session_id",
        "form",
        "fields",
        "attribution",
        "page_url",
        "submitted_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "session_id": {"type": "string", "format": "uuid"},
        "form": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
        "attribution": {**_FACTS, "description": "The session's attribution when submitted."},
        "page_url": {"type": ["string", "null"]},
        "submitted_at": _TIME,
    },
    "additionalProperties": False,
}


def session_view(record: SessionRecord) -> dict[str, Any]:
    parts = number_parts(record.number) if record.number else None
    return {
        "id": record.id,
        "client_id": record.client_id,
        "pool_id": record.pool_id,
        "visitor_id": record.visitor_id,
        "number": (
            {"e164": parts.e164, "national": parts.national, "international": parts.international}
            if parts
            else None
        ),
        "attribution": record.attribution,
        "touches": record.touches,
        "journey": record.journey,
        "created_at": record.created_at,
        "last_seen_at": record.last_seen_at,
        "lease_expires_at": record.lease_expires_at,
        "ended": record.ended,
    }


def form_view(form: Form) -> dict[str, Any]:
    return {
        "id": form.id,
        "client_id": form.client_id,
        "session_id": form.session_id,
        "form": form.form,
        "fields": form.fields,
        "attribution": form.attribution,
        "page_url": form.page,
        "submitted_at": form.submitted_at,
    }


async def list_sessions(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    query = ctx.query
    where = SessionFilter(
        pool_id=query.get("pool_id"),
        created_from=query.get("from"),
        created_before=query.get("to"),
        source=query.get("source"),
        campaign=query.get("campaign"),
        has_call=query.get("has_call"),
    )
    rows = await session_store.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1, where)
    return page_response(rows, limit, session_view)


async def get_session(ctx: RequestContext) -> web.Response:
    session_id = ctx.path_id("session_id", "session")
    db = ctx.app()[DATABASE]
    record = await session_store.get(db, session_id)
    if record is None or (ctx.scope is not None and record.client_id != ctx.scope):
        raise not_found("session")
    forms = await session_store.forms_page(db, record.client_id, None, 10_000, session_id=record.id)
    return json_response(
        {
            **session_view(record),
            "call_ids": await session_store.call_ids(db, record),
            "form_ids": [f.id for f in forms],
        }
    )


async def list_forms(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await session_store.forms_page(
        ctx.app()[DATABASE],
        ctx.scope,
        after,
        limit + 1,
        session_id=ctx.query.get("session_id"),
        submitted_from=ctx.query.get("from"),
        submitted_before=ctx.query.get("to"),
    )
    return page_response(rows, limit, form_view)


async def get_form(ctx: RequestContext) -> web.Response:
    form_id = ctx.path_id("form_id", "form")
    form = await session_store.get_form(ctx.app()[DATABASE], form_id, ctx.scope)
    if form is None:
        raise not_found("form")
    return json_response(form_view(form))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/sessions",
        list_sessions,
        "listSessions",
        "List visits with their attribution, touches and journey",
        "sessions",
        query=LIST_QUERY,
        response=page_schema(SESSION_ITEM),
    ),
    Endpoint(
        "GET",
        "/v1/sessions/{session_id}",
        get_session,
        "getSession",
        "Get a visit with its touches, journey, number, calls and forms",
        "sessions",
        response=SESSION_DETAIL,
    ),
    Endpoint(
        "GET",
        "/v1/forms",
        list_forms,
        "listForms",
        "List form submissions with their session's attribution",
        "sessions",
        query=FORMS_QUERY,
        response=page_schema(FORM_VIEW),
    ),
    Endpoint(
        "GET",
        "/v1/forms/{form_id}",
        get_form,
        "getForm",
        "Get a form submission",
        "sessions",
        response=FORM_VIEW,
    ),
]
