"""The console's overview: a client's calls per UTC day from the daily roll-ups.

``call_days`` and ``call_page_days`` count the calls rows there are (triggers keep them current,
migration 0012); ``call_aggregates`` counts the calls erasure and retention removed. Both are
added, so a range's figures do not drop when calls are purged, and no query reads the calls
table: a year of a million-call account is a few thousand roll-up rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID

from callrouter.store.database import Executor

# The two roll-ups' rows of a client in [$2, $3], as one set (landing pages are apart).
_DAYS = """
    SELECT day, source, campaign, disposition, calls, answered, first_time, 0::bigint AS forms
    FROM call_days WHERE client_id = $1 AND day BETWEEN $2 AND $3
    UNION ALL
    SELECT day, source, campaign, disposition, calls, answered, first_time, forms
    FROM call_aggregates WHERE client_id = $1 AND day BETWEEN $2 AND $3
"""


@dataclass(frozen=True, slots=True)
class SourceDay:
    """One day's calls from one source."""

    day: date
    source: str
    calls: int


@dataclass(frozen=True, slots=True)
class Totals:
    """A range's calls, those answered, those from first-time callers, and web forms."""

    calls: int
    answered: int
    first_time: int
    forms: int

    @property
    def answered_rate(self) -> float | None:
        return self.answered / self.calls if self.calls else None


@dataclass(frozen=True, slots=True)
class Ranked:
    """A campaign or landing page and its calls in the range."""

    key: str
    calls: int


@dataclass(frozen=True, slots=True)
class Overview:
    """What the console's overview shows for a range of days (both ends included, UTC)."""

    first: date
    last: date
    by_source: list[SourceDay]
    forms_by_day: dict[date, int]
    totals: Totals
    top_campaigns: list[Ranked]
    top_landing_pages: list[Ranked]


NONE = "(none)"
"""The key of calls that carried no value for a dimension (a direct call, a static number)."""


async def overview(
    db: Executor, client_id: UUID, first: date, last: date, top: int = 5
) -> Overview:
    """The overview of ``client_id`` from ``first`` to ``last`` (UTC days, inclusive)."""
    # One scan of the range for the three groupings (GROUPING() tells a row's grouping: 1 =
    # by day and source, 6 = by campaign, 7 = the totals).
    rows = await db.fetch(
        f"""SELECT day, source, campaign, GROUPING(day, source, campaign) AS grouping,
                   sum(calls)::bigint AS calls, sum(answered)::bigint AS answered,
                   sum(first_time)::bigint AS first_time, sum(forms)::bigint AS kept_forms
            FROM (SELECT day, coalesce(source, '{NONE}') AS source,
                         coalesce(campaign, '{NONE}') AS campaign, calls, answered,
                         first_time, forms
                  FROM ({_DAYS}) u) d
            GROUP BY GROUPING SETS ((day, source), (campaign), ())""",
        client_id,
        first,
        last,
    )
    source_rows = sorted(
        (r for r in rows if r["grouping"] == 1 and r["calls"] > 0),
        key=lambda r: (r["day"], r["source"]),
    )
    campaigns = sorted(
        (r for r in rows if r["grouping"] == 6 and r["calls"] > 0),
        key=lambda r: (-r["calls"], r["campaign"]),
    )[:top]
    totals = next(r for r in rows if r["grouping"] == 7)
    pages = await db.fetch(
        f"""SELECT coalesce(landing_page, '{NONE}') AS key, sum(calls)::bigint AS calls
            FROM (SELECT landing_page, calls FROM call_page_days
                  WHERE client_id = $1 AND day BETWEEN $2 AND $3
                  UNION ALL SELECT landing_page, calls FROM call_aggregates
                  WHERE client_id = $1 AND day BETWEEN $2 AND $3) p
            GROUP BY 1 HAVING sum(calls) > 0 ORDER BY 2 DESC, 1 LIMIT $4""",
        client_id,
        first,
        last,
        top,
    )
    # Forms are far fewer than calls and have their (client_id, submitted_at) index.
    forms = await db.fetch(
        """SELECT (submitted_at AT TIME ZONE 'UTC')::date AS day, count(*) AS forms FROM forms
           WHERE client_id = $1 AND submitted_at >= ($2::date::timestamp AT TIME ZONE 'UTC')
             AND submitted_at < (($3::date + 1)::timestamp AT TIME ZONE 'UTC')
           GROUP BY 1""",
        client_id,
        first,
        last,
    )
    forms_by_day = {row["day"]: int(row["forms"]) for row in forms}
    return Overview(
        first=first,
        last=last,
        by_source=[SourceDay(r["day"], r["source"], int(r["calls"])) for r in source_rows],
        forms_by_day=forms_by_day,
        totals=Totals(
            calls=int(totals["calls"] or 0),
            answered=int(totals["answered"] or 0),
            first_time=int(totals["first_time"] or 0),
            forms=int(totals["kept_forms"] or 0) + sum(forms_by_day.values()),
        ),
        top_campaigns=[Ranked(r["campaign"], int(r["calls"])) for r in campaigns],
        top_landing_pages=[Ranked(r["key"], int(r["calls"])) for r in pages],
    )


async def rebuild(db: Executor, client_id: UUID) -> int:
    """Count a client's roll-ups again from its calls rows (after a restore of the calls table
    alone, or a fix to the triggers); returns the client's calls. Run it in a transaction, so
    the overview never sees the roll-ups half built."""
    await db.execute("DELETE FROM call_days WHERE client_id = $1", client_id)
    await db.execute("DELETE FROM call_page_days WHERE client_id = $1", client_id)
    await db.execute(
        """INSERT INTO call_days (client_id, day, source, campaign, disposition, calls,
                                  answered, first_time)
           SELECT client_id, (started_at AT TIME ZONE 'UTC')::date, attribution->>'source',
                  attribution->>'campaign', disposition, count(*),
                  count(*) FILTER (WHERE answered_at IS NOT NULL),
                  count(*) FILTER (WHERE first_call)
           FROM calls WHERE client_id = $1 GROUP BY 1, 2, 3, 4, 5""",
        client_id,
    )
    await db.execute(
        """INSERT INTO call_page_days (client_id, day, landing_page, calls)
           SELECT client_id, (started_at AT TIME ZONE 'UTC')::date, attribution->>'landing_page',
                  count(*)
           FROM calls WHERE client_id = $1 GROUP BY 1, 2, 3""",
        client_id,
    )
    total = await db.fetchval(
        "SELECT coalesce(sum(calls), 0)::bigint FROM call_days WHERE client_id = $1", client_id
    )
    return int(total)
