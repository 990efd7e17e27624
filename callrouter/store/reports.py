"""Attribution reports: calls and forms grouped by where they came from, in plain SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.store.database import Executor

# The attribution key each grouping reads (static numbers and visits fill the same keys).
DIMENSIONS = {
    "source": "source",
    "medium": "medium",
    "campaign": "campaign",
    "landing_page": "landing_page",
}


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group: its calls, how many were answered, new vs returning callers, its forms, and
    the website visits credited to it."""

    key: str
    calls: int
    answered: int
    first_time_callers: int
    repeat_callers: int
    forms: int
    visits: int = 0

    @property
    def answered_rate(self) -> float | None:
        return round(self.answered / self.calls, 4) if self.calls else None

    @property
    def calls_per_visit(self) -> float | None:
        """Calls per visit: the group's call conversion rate (None without visits)."""
        return round(self.calls / self.visits, 4) if self.visits else None

    @property
    def forms_per_visit(self) -> float | None:
        return round(self.forms / self.visits, 4) if self.visits else None


async def attribution(
    db: Executor, client_id: UUID, dimension: str, start: datetime, end: datetime
) -> list[ReportRow]:
    """Calls and forms of one client between ``start`` and ``end``, grouped by ``dimension``.

    A caller is first-time when this call is their first ever to the client (not only in the
    range); withheld numbers count as neither. Calls and forms removed by erasure or retention
    still count, from their anonymous daily counts (``call_aggregates``): a day's counts are in
    the range when the day (UTC) begins inside it. Visits are the sessions that started in the
    range, grouped by the touch they are credited to (removed ones from their daily counts
    too); groups with visits and nothing else are listed.
    """
    key = DIMENSIONS[dimension]
    rows = await db.fetch(
        f"""WITH firsts AS (
                SELECT caller_number, min(started_at) AS first_at FROM calls
                WHERE client_id = $1 AND caller_number IS NOT NULL GROUP BY caller_number
            ),
            call_groups AS (
                SELECT coalesce(c.attribution->>'{key}', '(none)') AS key,
                       count(*) AS calls,
                       count(*) FILTER (WHERE c.answered_at IS NOT NULL) AS answered,
                       count(*) FILTER (WHERE c.started_at = f.first_at) AS first_time,
                       count(*) FILTER (WHERE c.started_at > f.first_at) AS repeat
                FROM calls c LEFT JOIN firsts f USING (caller_number)
                WHERE c.client_id = $1 AND c.started_at >= $2 AND c.started_at < $3
                GROUP BY 1
            ),
            form_groups AS (
                SELECT coalesce(attribution->>'{key}', '(none)') AS key, count(*) AS forms
                FROM forms WHERE client_id = $1 AND submitted_at >= $2 AND submitted_at < $3
                GROUP BY 1
            ),
            visit_groups AS (
                SELECT coalesce(attribution->>'{key}', '(none)') AS key, count(*) AS visits
                FROM sessions WHERE client_id = $1 AND created_at >= $2 AND created_at < $3
                GROUP BY 1
            ),
            kept AS (
                SELECT coalesce({key}, '(none)') AS key, calls, answered, first_time, repeat,
                       forms, visits
                FROM call_aggregates
                WHERE client_id = $1 AND (day::timestamp AT TIME ZONE 'UTC') >= $2
                  AND (day::timestamp AT TIME ZONE 'UTC') < $3
            ),
            everything AS (
                SELECT key, calls, answered, first_time, repeat, 0 AS forms, 0 AS visits
                FROM call_groups
                UNION ALL SELECT key, 0, 0, 0, 0, forms, 0 FROM form_groups
                UNION ALL SELECT key, calls, answered, first_time, repeat, forms, visits FROM kept
                UNION ALL SELECT key, 0, 0, 0, 0, 0, visits FROM visit_groups
            )
            SELECT key, sum(calls)::bigint AS calls, sum(answered)::bigint AS answered,
                   sum(first_time)::bigint AS first_time, sum(repeat)::bigint AS repeat,
                   sum(forms)::bigint AS forms, sum(visits)::bigint AS visits
            FROM everything GROUP BY key
            ORDER BY calls DESC, forms DESC, visits DESC, key""",
        client_id,
        start,
        end,
    )
    return [
        ReportRow(
            r["key"],
            r["calls"],
            r["answered"],
            r["first_time"],
            r["repeat"],
            r["forms"],
            r["visits"],
        )
        for r in rows
    ]
