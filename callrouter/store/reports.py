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
    """One group: its calls, how many were answered, new vs returning callers, its forms."""

    key: str
    calls: int
    answered: int
    first_time_callers: int
    repeat_callers: int
    forms: int

    @property
    def answered_rate(self) -> float | None:
        return round(self.answered / self.calls, 4) if self.calls else None


async def attribution(
    db: Executor, client_id: UUID, dimension: str, start: datetime, end: datetime
) -> list[ReportRow]:
    """Calls and forms of one client between ``start`` and ``end``, grouped by ``dimension``.

    A caller is first-time when this call is their first ever to the client (not only in the
    range); withheld numbers count as neither.
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
            )
            SELECT key, coalesce(c.calls, 0) AS calls, coalesce(c.answered, 0) AS answered,
                   coalesce(c.first_time, 0) AS first_time, coalesce(c.repeat, 0) AS repeat,
                   coalesce(f.forms, 0) AS forms
            FROM call_groups c FULL JOIN form_groups f USING (key)
            ORDER BY calls DESC, forms DESC, key""",
        client_id,
        start,
        end,
    )
    return [
        ReportRow(r["key"], r["calls"], r["answered"], r["first_time"], r["repeat"], r["forms"])
        for r in rows
    ]
