"""/v1/calls: call records with their attribution and every destination tried."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_schema,
)
from callrouter.api.fields import e164, timestamp, uuid
from callrouter.api.problems import Problem, not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import CALL_CONTROL, DATABASE
from callrouter.api.visits import JOURNEY, TOUCHES
from callrouter.store import calls
from callrouter.store import sessions as session_store
from callrouter.store.calls import Call, CallAttempt, CallFilter
from callrouter.store.sessions import SessionRecord

DISPOSITIONS = ("answered", "busy", "no_answer", "failed", "cancelled", "rejected", "interrupted")
ATTEMPT_RESULTS = ("answered", "busy", "no_answer", "rejected", "error", "cancelled")

LIST_QUERY = Schema(
    *PAGE_QUERY.fields,
    timestamp("from", "Calls that started at or after this time."),
    timestamp("to", "Calls that started before this time."),
    uuid("number_id", "Only calls to this tracking number (by id).", nullable=False),
    e164("number", "Only calls to this tracking number."),
    Field("disposition", "string", "Only calls that ended this way.", choices=DISPOSITIONS),
    Field("source", "string", "Only calls attributed to this source.", max_length=200),
    Field("campaign", "string", "Only calls attributed to this campaign.", max_length=200),
    Field(
        "state",
        "string",
        "active: calls in progress now; ended: finished calls.",
        choices=("active", "ended"),
    ),
)

_TIME = {"type": "string", "format": "date-time"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
_MAYBE_TEXT = {"type": ["string", "null"]}
ATTEMPT_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "seq",
        "destination",
        "started_at",
        "ringing_at",
        "answered_at",
        "ended_at",
        "result",
        "sip_status",
        "reason",
    ],
    "properties": {
        "seq": {"type": "integer"},
        "destination": {"type": "string"},
        "started_at": _TIME,
        "ringing_at": _MAYBE_TIME,
        "answered_at": _MAYBE_TIME,
        "ended_at": _MAYBE_TIME,
        "result": {"type": ["string", "null"], "enum": [*ATTEMPT_RESULTS, None]},
        "sip_status": {"type": ["integer", "null"]},
        "reason": _MAYBE_TEXT,
    },
    "additionalProperties": False,
}
VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "client_id",
        "number_id",
        "tracking_number",
        "caller_number",
        "trunk",
        "state",
        "disposition",
        "hangup_by",
        "hangup_reason",
        "session_id",
        "attribution",
        "record",
        "not_recorded_reason",
        "recording_truncated_reason",
        "started_at",
        "ringing_at",
        "answered_at",
        "ended_at",
        "duration_seconds",
        "talk_seconds",
        "attempts",
        "visit",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "number_id": {"type": ["string", "null"], "format": "uuid"},
        "tracking_number": {"type": "string"},
        "caller_number": _MAYBE_TEXT,
        "trunk": {"type": ["string", "null"], "description": "The carrier trunk it came in on."},
        "state": {"type": "string", "enum": ["ringing", "active", "ended"]},
        "disposition": {"type": ["string", "null"], "enum": [*DISPOSITIONS, None]},
        "hangup_by": {"type": ["string", "null"], "enum": ["caller", "callee", "system", None]},
        "hangup_reason": _MAYBE_TEXT,
        "session_id": {"type": ["string", "null"], "format": "uuid"},
        "attribution": {"type": "object"},
        "record": {"type": "boolean"},
        "not_recorded_reason": _MAYBE_TEXT,
        "recording_truncated_reason": {
            "type": ["string", "null"],
            "description": "Why the call's recording stops before the call did (the recordings "
            "disk filled up: what was written is kept), or null.",
        },
        "started_at": _TIME,
        "ringing_at": _MAYBE_TIME,
        "answered_at": _MAYBE_TIME,
        "ended_at": _MAYBE_TIME,
        "duration_seconds": {"type": ["number", "null"]},
        "talk_seconds": {"type": ["number", "null"]},
        "attempts": {"type": "array", "items": ATTEMPT_VIEW},
        "visit": {
            "type": ["object", "null"],
            "description": "The website visit the call came from (null: none, or erased): "
            "both touches and the pages seen, as GET /v1/sessions/{id} shows them.",
            "required": ["touches", "journey"],
            "properties": {"touches": TOUCHES, "journey": JOURNEY},
        },
    },
    "additionalProperties": False,
}


def attempt_view(attempt: CallAttempt) -> dict[str, Any]:
    return {
        "seq": attempt.seq,
        "destination": attempt.destination,
        "started_at": attempt.started_at,
        "ringing_at": attempt.ringing_at,
        "answered_at": attempt.answered_at,
        "ended_at": attempt.ended_at,
        "result": attempt.result,
        "sip_status": attempt.sip_status,
        "reason": attempt.reason,
    }


def view(
    call: Call, attempts: list[CallAttempt], visit: SessionRecord | None = None
) -> dict[str, Any]:
    duration = (call.ended_at - call.started_at).total_seconds() if call.ended_at else None
    talk = (
        (call.ended_at - call.answered_at).total_seconds()
        if call.ended_at and call.answered_at
        else None
    )
    return {
        "id": call.id,
        "client_id": call.client_id,
        "number_id": call.number_id,
        "tracking_number": call.tracking_number,
        "caller_number": call.caller_number,
        "trunk": call.trunk,
        "state": call.state,
        "disposition": call.disposition,
        "hangup_by": call.hangup_by,
        "hangup_reason": call.hangup_reason,
        "session_id": call.session_id,
        "attribution": call.attribution,
        "record": call.record,
        "not_recorded_reason": call.not_recorded_reason,
        "recording_truncated_reason": call.recording_truncated_reason,
        "started_at": call.started_at,
        "ringing_at": call.ringing_at,
        "answered_at": call.answered_at,
        "ended_at": call.ended_at,
        "duration_seconds": duration,
        "talk_seconds": talk,
        "attempts": [attempt_view(a) for a in attempts],
        "visit": {"touches": visit.touches, "journey": visit.journey} if visit else None,
    }


async def visits_of(ctx: RequestContext, session_ids: list[UUID]) -> dict[UUID, SessionRecord]:
    """The calls' visits, only the asking client's (PostgreSQL has every page view: each is
    written before the page gets its answer)."""
    return await session_store.of_ids(ctx.app()[DATABASE], ctx.scope, session_ids)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    query = ctx.query
    state = query.get("state")
    where = CallFilter(
        started_from=query.get("from"),
        started_before=query.get("to"),
        number_id=query.get("number_id"),
        tracking_number=query.get("number"),
        disposition=query.get("disposition"),
        source=query.get("source"),
        campaign=query.get("campaign"),
        live=None if state is None else state == "active",
    )
    db = ctx.app()[DATABASE]
    rows = await calls.list_page(db, ctx.scope, after, limit + 1, where)
    page = rows[:limit]
    attempts = await calls.attempts_of(db, [c.id for c in page])
    visits = await visits_of(ctx, [c.session_id for c in page if c.session_id is not None])
    return json_response(
        {
            "data": [
                view(c, attempts[c.id], visits.get(c.session_id) if c.session_id else None)
                for c in page
            ],
            "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        }
    )


async def get(ctx: RequestContext) -> web.Response:
    db = ctx.app()[DATABASE]
    call = await calls.get(db, ctx.path_id("call_id", "call"), ctx.scope)
    if call is None:
        raise not_found("call")
    attempts = await calls.attempts_of(db, [call.id])
    visits = await visits_of(ctx, [call.session_id] if call.session_id else [])
    return json_response(
        view(call, attempts[call.id], visits.get(call.session_id) if call.session_id else None)
    )


RECORDING = Schema(
    Field(
        "paused",
        "boolean",
        "true: record silence from now on (e.g. while a card number is read out); false: "
        "record again.",
        required=True,
    )
)
RECORDING_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["call_id", "paused"],
    "properties": {"call_id": {"type": "string", "format": "uuid"}, "paused": {"type": "boolean"}},
    "additionalProperties": False,
}


async def set_recording(ctx: RequestContext) -> web.Response:
    call_id = ctx.path_id("call_id", "call")
    if await calls.get(ctx.app()[DATABASE], call_id, ctx.scope) is None:
        raise not_found("call")
    control = ctx.app().get(CALL_CONTROL)
    paused = bool(ctx.body["paused"])
    refusal = (
        control.pause_recording(call_id, paused)
        if control is not None
        else "this server routes no calls"
    )
    if refusal is not None:
        raise Problem(409, refusal)
    return json_response({"call_id": call_id, "paused": paused})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/calls",
        list_,
        "listCalls",
        "List calls with attribution (state=active for live calls)",
        "calls",
        query=LIST_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint(
        "GET",
        "/v1/calls/{call_id}",
        get,
        "getCall",
        "Get a call with every destination tried",
        "calls",
        response=VIEW,
    ),
    Endpoint(
        "POST",
        "/v1/calls/{call_id}/recording",
        set_recording,
        "setCallRecording",
        "Pause or resume a live call's recording (PCI)",
        "calls",
        body=RECORDING,
        response=RECORDING_VIEW,
        errors=(409,),
        description="While paused both channels record silence, so card numbers read out are "
        "never stored. 409 when the call is not in progress or not being recorded.",
    ),
]
