"""RFC 9457 problem details: every error the API returns, in one shape.

Validation problems list each offending field with its reason, so a client developer can fix a
request without guessing:

    {"type": "https://callrouter.dev/problems/invalid-request", "title": "Invalid request",
     "status": 422, "detail": "e164: not a valid phone number",
     "errors": [{"field": "e164", "reason": "not a valid phone number"}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://callrouter.dev/problems/"

_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    408: ("request-timeout", "Request timeout"),
    409: ("conflict", "Conflict"),
    413: ("too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    416: ("range-not-satisfiable", "Range not satisfiable"),
    422: ("invalid-request", "Invalid request"),
    429: ("rate-limited", "Too many requests"),
    431: ("header-fields-too-large", "Request header fields too large"),
    500: ("internal", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
    504: ("timeout", "Request took too long"),
}


@dataclass(frozen=True)
class FieldError:
    """One field of a request and why it was refused."""

    field: str
    reason: str


@dataclass
class Problem(Exception):
    """An error response. Raise it from a handler; the middleware renders it."""

    status: int
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"

    def body(self, instance: str | None) -> dict[str, Any]:
        """:param instance: the request's path; None when it could not be read."""
        slug, title = _TITLES.get(self.status, ("error", "Error"))
        document: dict[str, Any] = {
            "type": PROBLEM_BASE + slug,
            "title": title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            document["instance"] = instance
        if self.errors:
            document["errors"] = [{"field": e.field, "reason": e.reason} for e in self.errors]
        return document

    def response(self, instance: str | None) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.body(instance)).encode(),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def invalid(field_name: str, reason: str) -> Problem:
    """A 422 for one field."""
    return Problem(422, f"{field_name}: {reason}", [FieldError(field_name, reason)])


def invalid_fields(errors: list[FieldError]) -> Problem:
    """A 422 listing every refused field."""
    detail = "; ".join(f"{e.field}: {e.reason}" for e in errors)
    return Problem(422, detail, errors)


def not_found(what: str) -> Problem:
    return Problem(404, f"no such {what}")


def conflict(field_name: str, reason: str) -> Problem:
    return Problem(409, f"{field_name}: {reason}", [FieldError(field_name, reason)])


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}
