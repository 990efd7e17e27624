"""The OpenAPI 3.1 document, written from the endpoint declarations the server runs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from callrouter import __version__
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.problems import PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA

OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict)
_PATH_PARAM = re.compile(r"{(\w+)}")

_ERROR_TEXT = {
    400: "Malformed request: invalid JSON, nested too deep, or header bytes that are not ASCII.",
    401: "Missing, unknown or revoked API key.",
    403: "The key may not do this (operator only).",
    404: "No such object, or it belongs to another client.",
    408: "The request body arrived too slowly.",
    409: "Conflicts with an existing object (e.g. a duplicate number).",
    413: "Request body too large.",
    415: "The body is not JSON.",
    416: "The Range asked for is outside the file.",
    422: "Invalid fields; each is named with its reason.",
    429: "Rate limit exceeded; see Retry-After.",
    503: "A dependency (the database) is unavailable.",
}


def _error_statuses(endpoint: Endpoint) -> list[int]:
    statuses = set(endpoint.errors)
    if endpoint.access != "public":
        statuses |= {400, 401, 429}
    if endpoint.access == "operator" and "{" not in endpoint.path:
        statuses.add(403)
    if "{" in endpoint.path:
        statuses.add(404)
    if endpoint.body is not None:
        statuses |= {400, 408, 413, 415, 422}
    if endpoint.query is not None:
        statuses.add(422)
    return sorted(statuses)


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in _PATH_PARAM.findall(endpoint.path)
    ]
    if endpoint.query is not None:
        parameters += [
            {
                "name": f.name,
                "in": "query",
                "required": f.required,
                "description": f.doc,
                "schema": f.json_schema(),
            }
            for f in endpoint.query.fields
        ]
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.response is not None:
        success["content"] = {endpoint.response_type: {"schema": endpoint.response}}
        for media_type in endpoint.alternate_types:
            success["content"][media_type] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    for status, text in endpoint.extra_responses.items():
        responses[str(status)] = {"description": text}
    for status in _error_statuses(endpoint):
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "security": [] if endpoint.access == "public" else [{"apiKey": []}],
        "responses": responses,
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if endpoint.access == "operator":
        operation["x-operator-only"] = True
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": endpoint.body.json_schema(partial=endpoint.partial_body)
                }
            },
        }
    return operation


def build_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callrouter API",
            "version": __version__,
            "description": "Call tracking and recording: numbers, pools, sessions, calls, "
            "recordings, webhooks and privacy requests. Authenticate with "
            "`Authorization: Bearer <API key>`; errors are RFC 9457 problem+json.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM_SCHEMA},
        },
    }


async def document(ctx: RequestContext) -> web.Response:
    return json_response(ctx.app()[OPENAPI_DOCUMENT])


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/openapi.json",
        document,
        "getOpenApi",
        "This API's OpenAPI document",
        "meta",
        access="public",
        response={"type": "object"},
    ),
]
