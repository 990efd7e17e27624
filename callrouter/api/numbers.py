"""/v1/numbers: tracking numbers, their destinations, dialplans and recording flags."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from callrouter.api.clients import resolve_owner
from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_response,
    page_schema,
)
from callrouter.api.fields import CLIENT_ID, TIMESTAMPS, destination, e164, text, uuid
from callrouter.api.problems import invalid, not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE, DIALPLANS
from callrouter.numbering import display_formats
from callrouter.store.numbers import NUMBERS, Number

DIALPLAN_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"

_SETTABLE = (
    uuid("pool_id", "Pool the number is leased from; null for a static number."),
    Field(
        "destination",
        "string",
        "Where calls go: a SIP URI or a phone number (E.164).",
        nullable=True,
        max_length=512,
        check=destination,
    ),
    Field(
        "dialplan",
        "string",
        "Name of the dialplan (a file under dialplans/).",
        max_length=64,
        pattern=DIALPLAN_NAME,
    ),
    Field(
        "dialplan_params",
        "object",
        "Parameters the dialplan reads, e.g. a secondary destination.",
        max_properties=32,
        values=Field("value", "string", "A parameter value.", max_length=512),
    ),
    Field("record", "boolean", "Record calls to this number."),
    text("label", "Human name of the number, e.g. the billboard it is printed on."),
    text("source", "Attribution source for calls to this number when it is static."),
    text("medium", "Attribution medium for calls to this number when it is static."),
    text("campaign", "Attribution campaign for calls to this number when it is static."),
)
CREATE = Schema(CLIENT_ID, e164("e164", "The tracking number.", required=True), *_SETTABLE)
UPDATE = Schema(*_SETTABLE)
LIST_QUERY = Schema(
    *PAGE_QUERY.fields,
    uuid("pool_id", "Only numbers of this pool.", nullable=False),
    e164("e164", "Only this number."),
)

_NULLABLE_TEXT = {"type": ["string", "null"]}
VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "client_id",
        "e164",
        "display",
        "pool_id",
        "destination",
        "dialplan",
        "dialplan_params",
        "record",
        "label",
        "source",
        "medium",
        "campaign",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "e164": {"type": "string"},
        "display": {
            "type": "object",
            "required": ["national", "international"],
            "properties": {"national": {"type": "string"}, "international": {"type": "string"}},
        },
        "pool_id": {"type": ["string", "null"], "format": "uuid"},
        "destination": _NULLABLE_TEXT,
        "dialplan": {"type": "string"},
        "dialplan_params": {"type": "object", "additionalProperties": {"type": "string"}},
        "record": {"type": "boolean"},
        "label": _NULLABLE_TEXT,
        "source": _NULLABLE_TEXT,
        "medium": _NULLABLE_TEXT,
        "campaign": _NULLABLE_TEXT,
        **TIMESTAMPS,
    },
    "additionalProperties": False,
}


def view(number: Number) -> dict[str, Any]:
    formats = display_formats(number.e164)
    return {
        "id": number.id,
        "client_id": number.client_id,
        "e164": number.e164,
        "display": {"national": formats.national, "international": formats.international},
        "pool_id": number.pool_id,
        "destination": number.destination,
        "dialplan": number.dialplan,
        "dialplan_params": number.dialplan_params,
        "record": number.record,
        "label": number.label,
        "source": number.source,
        "medium": number.medium,
        "campaign": number.campaign,
        "created_at": number.created_at,
        "updated_at": number.updated_at,
    }


def _check_dialplan(ctx: RequestContext, fields: dict[str, Any]) -> None:
    """A number naming a dialplan that is not in service would get 480 on every call."""
    library = ctx.app().get(DIALPLANS)
    name = fields.get("dialplan")
    if library is None or name is None or library.get(name) is not None:
        return
    raise invalid(
        "dialplan",
        f"no dialplan {name!r} is in service (known: {', '.join(library.known())}); "
        f"add {name}.toml to the dialplans directory first",
    )


async def create(ctx: RequestContext) -> web.Response:
    fields = dict(ctx.body)
    _check_dialplan(ctx, fields)
    owner = await resolve_owner(ctx, fields.pop("client_id", None))
    e164_text = fields.pop("e164")
    number = await NUMBERS.insert(
        ctx.app()[DATABASE], {"client_id": owner, "e164": e164_text}, fields
    )
    return json_response(view(number), 201)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    filters: dict[str, Any] = {k: ctx.query[k] for k in ("pool_id", "e164") if k in ctx.query}
    rows = await NUMBERS.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1, filters)
    return page_response(rows, limit, view)


async def get(ctx: RequestContext) -> web.Response:
    number = await NUMBERS.get(ctx.app()[DATABASE], ctx.path_id("number_id", "number"), ctx.scope)
    if number is None:
        raise not_found("number")
    return json_response(view(number))


async def update(ctx: RequestContext) -> web.Response:
    number_id = ctx.path_id("number_id", "number")
    _check_dialplan(ctx, ctx.body)
    number = await NUMBERS.update(ctx.app()[DATABASE], number_id, ctx.scope, ctx.body)
    if number is None:
        raise not_found("number")
    return json_response(view(number))


async def delete(ctx: RequestContext) -> web.Response:
    if not await NUMBERS.delete(ctx.app()[DATABASE], ctx.path_id("number_id", "number"), None):
        raise not_found("number")
    return web.Response(status=204)


ITEM = "/v1/numbers/{number_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/numbers",
        create,
        "createNumber",
        "Add a tracking number",
        "numbers",
        access="operator",
        body=CREATE,
        response=VIEW,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/v1/numbers",
        list_,
        "listNumbers",
        "List tracking numbers",
        "numbers",
        query=LIST_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint("GET", ITEM, get, "getNumber", "Get a tracking number", "numbers", response=VIEW),
    Endpoint(
        "PATCH",
        ITEM,
        update,
        "updateNumber",
        "Change a number's destination, dialplan, pool or recording",
        "numbers",
        body=UPDATE,
        partial_body=True,
        response=VIEW,
    ),
    Endpoint(
        "DELETE",
        ITEM,
        delete,
        "deleteNumber",
        "Remove a tracking number",
        "numbers",
        access="operator",
        status=204,
    ),
]
