"""Endpoints declared as data: path, access, body and query schemas, responses, handler.

The same declarations register the aiohttp routes, enforce authentication and validation before
a handler runs, and write the OpenAPI document, so the document cannot disagree with the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import orjson
from aiohttp import web

from callrouter.api.auth import AUTHENTICATOR
from callrouter.api.json_body import decode_body
from callrouter.api.problems import FieldError, Problem, invalid_fields
from callrouter.api.schema import Field, Schema, parse_uuid
from callrouter.api.state import BODY_TIMEOUT
from callrouter.store.api_keys import Principal

Access = Literal["public", "operator", "key"]
"""public: no key; operator: operator keys only; key: any valid key, scoped to its client."""

PAGE_QUERY = Schema(
    Field("limit", "integer", "Page size.", minimum=1, maximum=200),
    Field("cursor", "string", "Opaque cursor from a previous page's next_cursor.", max_length=64),
)
DEFAULT_LIMIT = 50
_NO_QUERY = Schema()


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a handler gets: the request, who is asking, and the validated body and query."""

    request: web.Request
    principal: Principal | None
    body: dict[str, Any]
    query: dict[str, Any]

    @property
    def scope(self) -> UUID | None:
        """The client whose data this request may touch; None for the operator."""
        return self.principal.client_id if self.principal else None

    def path_id(self, name: str, what: str) -> UUID:
        return parse_uuid(self.request.match_info[name], what)

    def app(self) -> web.Application:
        return self.request.app


Handler = Callable[[RequestContext], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    access: Access = "key"
    body: Schema | None = None
    partial_body: bool = False
    query: Schema | None = None
    response: dict[str, Any] | None = None
    status: int = 200
    response_type: str = "application/json"
    errors: tuple[int, ...] = ()
    description: str = ""
    extra_responses: dict[int, str] = field(default_factory=dict)
    alternate_types: tuple[str, ...] = ()
    """Other media types the success response may have (chosen by a query parameter)."""
    body_shortcut: Callable[[bytes], dict[str, Any] | None] | None = None
    """The parsed body when the raw bytes have the one shape a frequent caller always sends
    (checked whole, by a pattern no invalid body can match), else None: every other body,
    malformed ones included, takes the bounded decoder and ``body``'s schema, so what is
    refused and how the answer names the field stay theirs."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        principal = None
        if self.access != "public":
            principal = await request.app[AUTHENTICATOR].authenticate(request)
            if self.access == "operator" and not principal.is_operator:
                # A client key cannot tell whether operator-only objects exist.
                raise Problem(404 if request.match_info else 403, "needs an operator key")
        # Most routes take no query: an empty query string needs no schema to refuse nothing.
        query = (
            (self.query or _NO_QUERY).parse_query(request.query)
            if self.query is not None or request.query_string
            else {}
        )
        body: dict[str, Any] = {}
        if self.body is not None:
            if request.content_type != "application/json":
                raise Problem(415, "the body must be JSON (Content-Type: application/json)")
            if request.content.is_eof():
                # All of it came with the headers (a swap-script body does): taken from the
                # buffer at once, with no deadline to arm and without read()'s loop of awaits.
                raw = request.content.read_nowait()
                if len(raw) > request.client_max_size:
                    raise web.HTTPRequestEntityTooLarge(request.client_max_size, len(raw))
            else:
                raw = await _read_in_time(request)
            body = self._parse_body(self.body, raw)
        return await self.handler(RequestContext(request, principal, body, query))

    def _parse_body(self, schema: Schema, raw: bytes) -> dict[str, Any]:
        if self.body_shortcut is not None:
            shortcut = self.body_shortcut(raw)
            if shortcut is not None:
                return shortcut
        return schema.parse(decode_body(raw), partial=self.partial_body)


async def _read_in_time(request: web.Request) -> bytes:
    """A body still arriving, within the body deadline."""
    seconds = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise Problem(
            408,
            f"body: not received in full within {seconds:g} s",
            [FieldError("body", "sent too slowly")],
            headers={"Connection": "close"},
        ) from None


def _default(value: Any) -> Any:
    """What orjson does not write itself: asyncpg's UUID class (a subclass; ``uuid.UUID`` and
    ``datetime`` are written natively, a UTC time ending in Z)."""
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data: Any) -> bytes:
    # orjson: an answer's encoding 2.3 -> 0.2 µs for a heartbeat's, 6.2 -> 1.0 for a new
    # visit's (json's encoder calls back into Python for every UUID and time).
    return orjson.dumps(data, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def page_args(ctx: RequestContext) -> tuple[UUID | None, int]:
    """(after, limit) from the cursor and limit query parameters."""
    cursor = ctx.query.get("cursor")
    after = None
    if cursor is not None:
        try:
            after = UUID(cursor)
        except ValueError:
            raise invalid_fields([FieldError("cursor", "is not a cursor from this API")]) from None
    return after, ctx.query.get("limit", DEFAULT_LIMIT)


def page_response(
    rows: Sequence[Any], limit: int, view: Callable[[Any], dict[str, Any]]
) -> web.Response:
    """At most ``limit`` items; callers fetch ``limit + 1`` rows to learn whether more exist."""
    more = len(rows) > limit
    items = rows[:limit]
    next_cursor = str(items[-1].id) if more and items else None
    return json_response({"data": [view(row) for row in items], "next_cursor": next_cursor})


def page_schema(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    }


def register(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handle)
