"""Call records: written as a call progresses, read by the calls API and reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor
from callrouter.store.nodes import HOLDERS, NODE_LOCK

CALL_COLUMNS = (
    "id, client_id, number_id, tracking_number, caller_number, sip_call_id, trunk, dialplan, "
    "session_id, attribution, state, disposition, hangup_by, hangup_reason, record, "
    "not_recorded_reason, recording_truncated_reason, started_at, ringing_at, answered_at, "
    "ended_at"
)
ATTEMPT_COLUMNS = (
    "call_id, seq, destination, started_at, ringing_at, answered_at, ended_at, result, "
    "sip_status, reason"
)


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """One destination tried for a call (failover makes several)."""

    call_id: UUID
    seq: int
    destination: str
    started_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    result: str | None
    sip_status: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Call:
    """One inbound call and what became of it."""

    id: UUID
    client_id: UUID
    number_id: UUID | None
    tracking_number: str
    caller_number: str | None
    sip_call_id: str
    trunk: str | None
    dialplan: str | None
    session_id: UUID | None
    attribution: dict[str, Any]
    state: str
    disposition: str | None
    hangup_by: str | None
    hangup_reason: str | None
    record: bool
    not_recorded_reason: str | None
    recording_truncated_reason: str | None
    """Why its recording ends before the call did (the recordings disk filled up)."""
    started_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class CallFilter:
    """What GET /v1/calls may narrow by; None means any."""

    started_from: datetime | None = None
    started_before: datetime | None = None
    number_id: UUID | None = None
    tracking_number: str | None = None
    disposition: str | None = None
    source: str | None = None
    campaign: str | None = None
    live: bool | None = None


async def list_page(
    db: Executor, scope: UUID | None, after: UUID | None, limit: int, where: CallFilter
) -> list[Call]:
    """Calls after the cursor, oldest first (ids are UUIDv7, so id order is the order the
    calls started), within ``scope``, narrowed by ``where``."""
    rows = await db.fetch(
        f"""SELECT {CALL_COLUMNS} FROM calls
            WHERE ($1::uuid IS NULL OR client_id = $1)
              AND ($2::uuid IS NULL OR id > $2)
              AND ($4::timestamptz IS NULL OR started_at >= $4)
              AND ($5::timestamptz IS NULL OR started_at < $5)
              AND ($6::uuid IS NULL OR number_id = $6)
              AND ($7::text IS NULL OR tracking_number = $7)
              AND ($8::text IS NULL OR disposition = $8)
              AND ($9::text IS NULL OR attribution->>'source' = $9)
              AND ($10::text IS NULL OR attribution->>'campaign' = $10)
              AND ($11::boolean IS NULL OR (state <> 'ended') = $11)
            ORDER BY id LIMIT $3""",
        scope,
        after,
        limit,
        where.started_from,
        where.started_before,
        where.number_id,
        where.tracking_number,
        where.disposition,
        where.source,
        where.campaign,
        where.live,
    )
    return [Call(**row) for row in rows]


async def get(db: Executor, call_id: UUID, scope: UUID | None) -> Call | None:
    row = await db.fetchrow(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        call_id,
        scope,
    )
    return Call(**row) if row else None


async def find_by_sip_call_id(db: Executor, number_id: UUID, sip_call_id: str) -> Call | None:
    """The call a carrier's Call-ID started on a number (the probe finds its own call)."""
    row = await db.fetchrow(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE number_id = $1 AND sip_call_id = $2 "
        "ORDER BY started_at DESC LIMIT 1",
        number_id,
        sip_call_id,
    )
    return Call(**row) if row else None


async def attempts_of(db: Executor, call_ids: Sequence[UUID]) -> dict[UUID, list[CallAttempt]]:
    """Attempts of several calls in one query, in order."""
    rows = await db.fetch(
        f"SELECT {ATTEMPT_COLUMNS} FROM call_attempts WHERE call_id = ANY($1::uuid[]) "
        "ORDER BY call_id, seq",
        list(call_ids),
    )
    result: dict[UUID, list[CallAttempt]] = {call_id: [] for call_id in call_ids}
    for row in rows:
        result[row["call_id"]].append(CallAttempt(**row))
    return result


async def close_interrupted(
    db: Executor, last_alive: datetime | None, node: str
) -> list[InterruptedCall]:
    """This node's calls still open from before its crash or kill: closed out, never left
    'live' forever (another node's calls are its own, or the survivors', to close).

    Runs at start-up, after the call journal has applied its spool (so a call that ended while
    the database was away is not among them) and before any SIP listener opens, so no call of
    this run can be caught. Calls from before the cluster (no node) are closed by the first
    node to start.

    What the SIP evidence the journal has (the spool's events included) says is kept: a call's
    ringing and answered times, and an attempt that was answered stays ``answered`` (its 2xx
    was seen); an attempt without an answer ends as ``error``.

    :param last_alive: the previous run's last heartbeat, when the calls really ended (no
        earlier than each call's own last event); None: unknown, now.
    :returns: the calls closed, with what their call.completed events say.
    """
    rows = await db.fetch(
        f"""WITH closed AS (
               UPDATE calls SET state = 'ended', disposition = 'interrupted',
                      hangup_by = 'system', hangup_reason = 'server restarted',
                      ended_at = greatest(started_at, ringing_at, answered_at,
                                          coalesce($1::timestamptz, now()))
               WHERE state <> 'ended' AND (node = $2 OR node IS NULL)
               RETURNING id, client_id, started_at, ended_at, node, hangup_reason,
                         tracking_number, caller_number, session_id, attribution),
           {_CLOSE_ATTEMPTS}
           {_CLOSED_CALLS}""",
        last_alive,
        node,
    )
    return [InterruptedCall(**dict(row)) for row in rows]


@dataclass(frozen=True, slots=True)
class InterruptedCall:
    """A call closed as interrupted for a run that is gone (this node's last one, or a lost
    node's): what its call.completed event says."""

    id: UUID
    client_id: UUID
    #: None for a call from before the cluster.
    node: str | None
    tracking_number: str
    caller_number: str | None
    session_id: UUID | None
    attribution: dict[str, Any]
    hangup_reason: str
    attempts: int
    journey: list[dict[str, Any]]
    """The visit's page views up to the call (empty without a visit, or once it is erased)."""


async def close_on_lost_nodes(db: Executor, node_timeout: float) -> list[InterruptedCall]:
    """Open calls of every node that is gone (no heartbeat for ``node_timeout`` seconds and no
    database session holding its lock) closed as interrupted at its last heartbeat; the calls
    closed. A node that restarts takes its lock before it takes calls, so the calls this
    statement sees closed were never a live node's."""
    rows = await db.fetch(
        f"""WITH lost AS (
               SELECT n.name, n.heartbeat_at FROM nodes n
               WHERE n.heartbeat_at < now() - make_interval(secs => $1)
                 AND NOT EXISTS ({HOLDERS.format(kind="$2", key="n.id")})),
           closed AS (
               UPDATE calls c SET state = 'ended', disposition = 'interrupted',
                      hangup_by = 'system', hangup_reason = 'node ' || lost.name || ' lost',
                      ended_at = greatest(c.started_at, c.ringing_at, c.answered_at,
                                          lost.heartbeat_at)
               FROM lost
               WHERE c.node = lost.name AND c.state <> 'ended'
               RETURNING c.id, c.client_id, c.started_at, c.ended_at, c.node, c.hangup_reason,
                         c.tracking_number, c.caller_number, c.session_id, c.attribution),
           {_CLOSE_ATTEMPTS}
           {_CLOSED_CALLS}""",
        node_timeout,
        NODE_LOCK,
    )
    return [InterruptedCall(**dict(row)) for row in rows]


_CLOSED_CALLS = """SELECT closed.id, client_id, node, tracking_number, caller_number, session_id,
                  attribution, hangup_reason,
                  (SELECT count(*) FROM call_attempts a WHERE a.call_id = closed.id) AS attempts,
                  coalesce((SELECT jsonb_agg(j.view ORDER BY j.n)
                              FROM sessions s,
                                   jsonb_array_elements(s.journey) WITH ORDINALITY AS j(view, n)
                             WHERE s.id = closed.session_id
                               AND (j.view->>'at')::timestamptz <= closed.started_at),
                           '[]'::jsonb) AS journey
             FROM closed ORDER BY closed.id"""
"""The calls a WITH clause named ``closed`` just closed, as ``InterruptedCall`` rows; the
journey is the visit's page views up to the call's start, as its node would have sent it."""


_CLOSE_ATTEMPTS = """attempts AS (
               UPDATE call_attempts a
                  SET result = CASE WHEN a.answered_at IS NULL THEN 'error' ELSE 'answered' END,
                      sip_status = CASE WHEN a.answered_at IS NULL THEN a.sip_status ELSE 200 END,
                      reason = closed.hangup_reason,
                      ended_at = greatest(a.started_at, a.ringing_at, a.answered_at,
                                          closed.ended_at)
               FROM closed
               WHERE a.call_id = closed.id AND a.ended_at IS NULL RETURNING 1)"""
"""The attempts of the calls a WITH clause named ``closed`` just closed, closed with them."""
