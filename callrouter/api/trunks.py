"""/v1/trunks: the carriers allowed to send calls, and the gateways E.164 destinations go to.

Operator keys only. A change reaches the router at once (migration 0006's trigger).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
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
from callrouter.api.fields import TIMESTAMPS, e164
from callrouter.api.problems import invalid, not_found
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE
from callrouter.sip.errors import SipError
from callrouter.sip.uri import SipUri, parse_uri
from callrouter.store.trunks import TRUNKS, IpNetwork, TrunkRow

TRUNK_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _network(text: str) -> IpNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("not an address or network (CIDR)") from None


def _sip_uri(text: str) -> str:
    try:
        uri = parse_uri(text)
    except SipError:
        uri = None
    if not isinstance(uri, SipUri):
        raise ValueError("must be a SIP URI (sip:gw.example.net;transport=tcp)")
    return text


NAME = Field(
    "name", "string", "Short name, shown on call records.", max_length=64, pattern=TRUNK_NAME
)
_SETTABLE = (
    Field(
        "networks",
        "array",
        "Addresses or networks (CIDR) the carrier sends from; INVITEs from them are admitted.",
        max_items=64,
        items=Field(
            "network", "string", "192.0.2.0/24 or 2001:db8::1", max_length=64, check=_network
        ),
    ),
    Field(
        "number_from",
        "string",
        "Where the dialled number is read: the Request-URI (then To when it holds no number), "
        "or always To.",
        choices=("request_uri", "to"),
    ),
    Field(
        "country",
        "string",
        "ISO 3166 region for numbers the carrier writes nationally (0151 ... -> +44151 ...).",
        pattern=r"^[A-Z]{2}$",
        max_length=2,
    ),
    Field(
        "nat",
        "boolean",
        "The carrier is behind NAT: latch RTP to its first source, and send in-dialog "
        "requests (BYE) to where its requests come from rather than to its Contact.",
    ),
    Field(
        "keepalives",
        "boolean",
        "Whether this carrier's leg of an answered call without a session timer gets an "
        "in-dialog OPTIONS every [sip] dialog_keepalive_seconds (a 481 or no answer ends the "
        "call). Off for a carrier that answers 481 to OPTIONS it does not handle.",
    ),
    Field(
        "uri",
        "string",
        "Outbound: SIP URI E.164 destinations are sent to (resolved per RFC 3263); null for "
        "an inbound-only trunk.",
        nullable=True,
        max_length=512,
        check=_sip_uri,
    ),
    Field(
        "caller_id",
        "string",
        "Caller ID on calls sent through this trunk: pass the caller's, rewrite to "
        "caller_id_number, or withhold.",
        choices=("pass", "rewrite", "withhold"),
    ),
    e164("caller_id_number", "Number presented when caller_id is rewrite.", nullable=True),
)
CREATE = Schema(replace(NAME, required=True), *_SETTABLE)
UPDATE = Schema(NAME, *_SETTABLE)

VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "name",
        "networks",
        "number_from",
        "country",
        "nat",
        "keepalives",
        "uri",
        "caller_id",
        "caller_id_number",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "networks": {"type": "array", "items": {"type": "string"}},
        "number_from": {"type": "string", "enum": ["request_uri", "to"]},
        "country": {"type": "string"},
        "nat": {"type": "boolean"},
        "keepalives": {"type": "boolean"},
        "uri": {"type": ["string", "null"]},
        "caller_id": {"type": "string", "enum": ["pass", "rewrite", "withhold"]},
        "caller_id_number": {"type": ["string", "null"]},
        **TIMESTAMPS,
    },
    "additionalProperties": False,
}


def view(trunk: TrunkRow) -> dict[str, Any]:
    return {
        "id": trunk.id,
        "name": trunk.name,
        "networks": [str(n) for n in trunk.networks],
        "number_from": trunk.number_from,
        "country": trunk.country,
        "nat": trunk.nat,
        "keepalives": trunk.keepalives,
        "uri": trunk.uri,
        "caller_id": trunk.caller_id,
        "caller_id_number": trunk.caller_id_number,
        "created_at": trunk.created_at,
        "updated_at": trunk.updated_at,
    }


def _check_caller_id(caller_id: str, number: str | None) -> None:
    if caller_id == "rewrite" and not number:
        raise invalid("caller_id_number", "is required when caller_id is rewrite")


async def create(ctx: RequestContext) -> web.Response:
    _check_caller_id(ctx.body.get("caller_id", "pass"), ctx.body.get("caller_id_number"))
    trunk = await TRUNKS.insert(ctx.app()[DATABASE], {}, ctx.body)
    return json_response(view(trunk), 201)


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await TRUNKS.list_page(ctx.app()[DATABASE], None, after, limit + 1)
    return page_response(rows, limit, view)


async def get(ctx: RequestContext) -> web.Response:
    trunk = await TRUNKS.get(ctx.app()[DATABASE], ctx.path_id("trunk_id", "trunk"), None)
    if trunk is None:
        raise not_found("trunk")
    return json_response(view(trunk))


async def update(ctx: RequestContext) -> web.Response:
    db = ctx.app()[DATABASE]
    trunk_id = ctx.path_id("trunk_id", "trunk")
    async with db.acquire() as connection, connection.transaction():
        current = await TRUNKS.get(connection, trunk_id, None)
        if current is None:
            raise not_found("trunk")
        _check_caller_id(
            ctx.body.get("caller_id", current.caller_id),
            ctx.body.get("caller_id_number", current.caller_id_number),
        )
        trunk = await TRUNKS.update(connection, trunk_id, None, ctx.body)
    assert trunk is not None
    return json_response(view(trunk))


async def delete(ctx: RequestContext) -> web.Response:
    if not await TRUNKS.delete(ctx.app()[DATABASE], ctx.path_id("trunk_id", "trunk"), None):
        raise not_found("trunk")
    return web.Response(status=204)


ITEM = "/v1/trunks/{trunk_id}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/trunks",
        create,
        "createTrunk",
        "Add a carrier trunk",
        "trunks",
        access="operator",
        body=CREATE,
        response=VIEW,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/v1/trunks",
        list_,
        "listTrunks",
        "List trunks (the `config` trunk from the configuration file is not listed)",
        "trunks",
        access="operator",
        query=PAGE_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint(
        "GET", ITEM, get, "getTrunk", "Get a trunk", "trunks", access="operator", response=VIEW
    ),
    Endpoint(
        "PATCH",
        ITEM,
        update,
        "updateTrunk",
        "Change a trunk",
        "trunks",
        access="operator",
        body=UPDATE,
        partial_body=True,
        response=VIEW,
        errors=(409,),
    ),
    Endpoint(
        "DELETE",
        ITEM,
        delete,
        "deleteTrunk",
        "Remove a trunk",
        "trunks",
        access="operator",
        status=204,
    ),
]
