"""/v1/reports/attribution: calls, forms and visits by source, medium, campaign or landing
page, with conversion rates."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from callrouter.api.clients import resolve_owner
from callrouter.api.endpoints import Endpoint, RequestContext, json_response
from callrouter.api.fields import CLIENT_ID, timestamp
from callrouter.api.problems import invalid
from callrouter.api.schema import Field, Schema
from callrouter.api.state import DATABASE
from callrouter.store import reports
from callrouter.store.reports import DIMENSIONS, ReportRow

QUERY = Schema(
    CLIENT_ID,
    Field("by", "string", "What to group by (default source).", choices=tuple(DIMENSIONS)),
    timestamp("from", "Start of the range (default: 30 days before 'to')."),
    timestamp("to", "End of the range, exclusive (default: now)."),
    Field("format", "string", "json (default) or csv.", choices=("json", "csv")),
)
COLUMNS = (
    "key",
    "calls",
    "answered",
    "answered_rate",
    "first_time_callers",
    "repeat_callers",
    "forms",
    "visits",
    "calls_per_visit",
    "forms_per_visit",
)
ROW: dict[str, Any] = {
    "type": "object",
    "required": list(COLUMNS),
    "properties": {
        "key": {"type": "string"},
        "calls": {"type": "integer"},
        "answered": {"type": "integer"},
        "answered_rate": {"type": ["number", "null"]},
        "first_time_callers": {"type": "integer"},
        "repeat_callers": {"type": "integer"},
        "forms": {"type": "integer"},
        "visits": {"type": "integer", "description": "Website visits credited to the group."},
        "calls_per_visit": {
            "type": ["number", "null"],
            "description": "Call conversion rate: calls / visits (null without visits).",
        },
        "forms_per_visit": {"type": ["number", "null"], "description": "forms / visits."},
    },
    "additionalProperties": False,
}
VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["by", "from", "to", "rows"],
    "properties": {
        "by": {"type": "string"},
        "from": {"type": "string", "format": "date-time"},
        "to": {"type": "string", "format": "date-time"},
        "rows": {"type": "array", "items": ROW},
    },
}


def _row(row: ReportRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "calls": row.calls,
        "answered": row.answered,
        "answered_rate": row.answered_rate,
        "first_time_callers": row.first_time_callers,
        "repeat_callers": row.repeat_callers,
        "forms": row.forms,
        "visits": row.visits,
        "calls_per_visit": row.calls_per_visit,
        "forms_per_visit": row.forms_per_visit,
    }


async def attribution(ctx: RequestContext) -> web.StreamResponse:
    client = await resolve_owner(ctx, ctx.query.get("client_id"))
    end: datetime = ctx.query.get("to") or datetime.now(UTC)
    start: datetime = ctx.query.get("from") or end - timedelta(days=30)
    if start >= end:
        raise invalid("from", "must be before 'to'")
    by = ctx.query.get("by", "source")
    rows = [_row(r) for r in await reports.attribution(ctx.app()[DATABASE], client, by, start, end)]
    if ctx.query.get("format") == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        response = web.Response(text=out.getvalue(), content_type="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="calls-by-{by}.csv"'
        return response
    return json_response({"by": by, "from": start, "to": end, "rows": rows})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/reports/attribution",
        attribution,
        "attributionReport",
        "Calls and forms by source, medium, campaign or landing page",
        "reports",
        query=QUERY,
        response=VIEW,
        alternate_types=("text/csv",),
    ),
]
