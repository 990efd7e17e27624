"""The overview: calls per day stacked by source over a chosen range (a uPlot chart, with the
same figures as a table for screen readers), answered rate, first-time callers, forms beside
calls, top campaigns and landing pages, and each pool's utilisation. Figures come from the
daily roll-ups (store/call_days.py), so a year of a big account is one quick read."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from callrouter.api.state import SESSIONS
from callrouter.console.pages import Page, render
from callrouter.console.permissions import Permission, require
from callrouter.console.scope import client_of
from callrouter.console.state import CONSOLE
from callrouter.store import call_days
from callrouter.store.pools import POOLS

DEFAULT_DAYS = 30
MAX_DAYS = 366


def day_range(query: Any, today: date) -> tuple[date, date]:
    """The ``from`` and ``to`` dates of the query (both included; default the last 30 days),
    or a 400 page naming the field that is wrong."""
    last = _day(query, "to", today)
    first = _day(query, "from", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise web.HTTPBadRequest(reason="from: must not be after to")
    if (last - first).days >= MAX_DAYS:
        raise web.HTTPBadRequest(reason=f"from: a range is at most {MAX_DAYS} days")
    return first, last


def _day(query: Any, field: str, default: date) -> date:
    text = query.get(field, "")
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{field}: not a date (YYYY-MM-DD)") from None


def chart_data(figures: call_days.Overview) -> dict[str, Any]:
    """Days (epoch seconds, UTC midnight) and one series of calls per source, busiest first."""
    days = [
        figures.first + timedelta(days=n) for n in range((figures.last - figures.first).days + 1)
    ]
    index = {day: n for n, day in enumerate(days)}
    per_source: dict[str, list[int]] = {}
    for row in figures.by_source:
        per_source.setdefault(row.source, [0] * len(days))[index[row.day]] = row.calls
    ordered = sorted(per_source.items(), key=lambda item: (-sum(item[1]), item[0]))
    return {
        "days": [int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) for d in days],
        "labels": [d.isoformat() for d in days],
        "series": [{"label": source, "values": values} for source, values in ordered],
    }


@require(Permission.REPORTS_READ)
async def overview(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    client_id = client_of(request)
    today = datetime.fromtimestamp(console.clock(), UTC).date()
    first, last = day_range(request.query, today)
    figures = await call_days.overview(console.database, client_id, first, last)
    sessions = request.app.get(SESSIONS)
    pools = []
    for pool in await POOLS.list_page(console.database, client_id, None, 100):
        stats = sessions.stats(pool.id) if sessions is not None else None
        pools.append({"pool": pool, "stats": stats})
    data = chart_data(figures)
    table = [
        {
            "day": label,
            "counts": [series["values"][n] for series in data["series"]],
            "forms": figures.forms_by_day.get(date.fromisoformat(label), 0),
        }
        for n, label in enumerate(data["labels"])
    ]
    return await render(
        request,
        "overview.html",
        {"figures": figures, "chart": data, "table": table, "pools": pools},
    )


PAGES = [Page("/", "overview", get=overview)]
