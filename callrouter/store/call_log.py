"""The console's call log: a client's calls newest first, filtered, in keyset pages or streamed.

Pages are keyset pages on the call id (a UUIDv7, so id order is start order): a deep page
costs what the first one does. Each filter has an index that starts (client_id, field, id)
(migration 0012), and a date range is also turned into an id range, so the newest calls of a
filtered set are read from one index in order and the scan stops at the page's end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from callrouter.store.calls import CALL_COLUMNS, Call
from callrouter.store.ids import id_floor

# A call's id is made when its INVITE is taken, its started_at a moment later: the id range of
# a date range is widened by this much, and started_at decides exactly.
_ID_SLACK = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class CallLogFilter:
    """What the call log narrows by; None means any."""

    started_from: datetime | None = None
    started_before: datetime | None = None
    number_id: UUID | None = None
    source: str | None = None
    campaign: str | None = None
    disposition: str | None = None
    recorded: bool | None = None
    caller: str | None = None
    """A caller number: '+' and digits for the whole E.164 number, else its last digits."""


@dataclass(frozen=True, slots=True)
class CallLogEntry:
    """One call of the log and its recording, if it has one."""

    call: Call
    recording_id: UUID | None


def caller_search(text: str) -> tuple[str | None, str | None]:
    """(exact E.164, reversed last digits) for what was typed in the caller search.

    '+44 7700 900123' is an exact number. '07700 900123' or '900123' are the number's last
    digits: leading zeros are a trunk or international prefix, which an E.164 number does not
    spell, so they are dropped, and the rest must end the number.
    """
    digits = "".join(ch for ch in text if ch.isdigit())
    if text.strip().startswith("+"):
        return "+" + digits, None
    return None, digits.lstrip("0")[::-1]


def _where(client_id: UUID, where: CallLogFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of a client's filtered calls and its arguments ($1 is the client)."""
    args: list[Any] = [client_id]
    clauses = ["c.client_id = $1"]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.replace("?", f"${len(args)}"))

    if where.started_from is not None:
        add("c.id >= ?", id_floor(where.started_from - _ID_SLACK))
        add("c.started_at >= ?", where.started_from)
    if where.started_before is not None:
        add("c.id < ?", id_floor(where.started_before + _ID_SLACK))
        add("c.started_at < ?", where.started_before)
    if where.number_id is not None:
        add("c.number_id = ?", where.number_id)
    if where.source is not None:
        add("c.attribution->>'source' = ?", where.source)
    if where.campaign is not None:
        add("c.attribution->>'campaign' = ?", where.campaign)
    if where.disposition is not None:
        add("c.disposition = ?", where.disposition)
    if where.recorded is not None:
        exists = "EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = c.id)"
        clauses.append(exists if where.recorded else f"NOT {exists}")
    if where.caller is not None:
        exact, reversed_digits = caller_search(where.caller)
        if exact is not None:
            add("c.caller_number = ?", exact)
        else:
            # The matches first, from the reversed-number index, then the page from them:
            # walking the log newest first for a suffix few calls have reads the whole log.
            # A range, not LIKE, so a cached plan with the pattern as a parameter uses it too
            # ('~' sorts after '+' and every digit).
            args.extend([reversed_digits, f"{reversed_digits}~"])
            clauses.append(
                "c.id = ANY (ARRAY (SELECT m.id FROM calls m WHERE m.client_id = $1"
                " AND m.caller_number IS NOT NULL"
                f" AND reverse(m.caller_number) ~>=~ ${len(args) - 1}"
                f" AND reverse(m.caller_number) ~<~ ${len(args)}))"
            )
    return " AND ".join(clauses), args


_SELECT = (
    "SELECT "
    + ", ".join(f"c.{column.strip()}" for column in CALL_COLUMNS.split(","))
    + ", (SELECT r.id FROM recordings r WHERE r.call_id = c.id ORDER BY r.id LIMIT 1)"
    " AS recording_id FROM calls c"
)


def _entry(row: asyncpg.Record) -> CallLogEntry:
    values = dict(row)
    recording_id = values.pop("recording_id")
    return CallLogEntry(Call(**values), recording_id)


async def page(
    db: asyncpg.Pool[asyncpg.Record] | asyncpg.Connection[asyncpg.Record],
    client_id: UUID,
    where: CallLogFilter,
    *,
    before: UUID | None = None,
    after: UUID | None = None,
    limit: int = 50,
) -> list[CallLogEntry]:
    """Up to ``limit`` calls, newest first: the newest of all, those older than ``before``
    (the next page), or the oldest ones newer than ``after`` (the previous page)."""
    sql, args = _where(client_id, where)
    order = "DESC"
    if before is not None:
        args.append(before)
        sql += f" AND c.id < ${len(args)}"
    elif after is not None:
        args.append(after)
        sql += f" AND c.id > ${len(args)}"
        order = "ASC"
    args.append(limit)
    rows = await db.fetch(f"{_SELECT} WHERE {sql} ORDER BY c.id {order} LIMIT ${len(args)}", *args)
    entries = [_entry(row) for row in rows]
    return entries[::-1] if order == "ASC" else entries


async def stream(
    connection: asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[Any],
    client_id: UUID,
    where: CallLogFilter,
) -> AsyncIterator[CallLogEntry]:
    """Every call of the filtered set, newest first, read through a cursor (a CSV export of a
    million calls holds a few hundred in memory). Runs in a transaction of its own."""
    sql, args = _where(client_id, where)
    async with connection.transaction(readonly=True):
        async for row in connection.cursor(
            f"{_SELECT} WHERE {sql} ORDER BY c.id DESC", *args, prefetch=500
        ):
            yield _entry(row)
