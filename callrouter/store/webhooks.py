"""Webhook endpoints of clients and the delivery queue, in plain SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from callrouter.call_events import WebhookRaised
from callrouter.store.database import Executor
from callrouter.store.ids import derived_id, new_id
from callrouter.store.tenant_table import TenantTable


def _json_default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


def event_body(event: str, data: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
    """What a delivery of ``event`` sends, as plain JSON values (ids and times as strings)."""
    payload = {"event": event, "created_at": at or datetime.now(UTC), "data": data}
    decoded: dict[str, Any] = json.loads(json.dumps(payload, default=_json_default))
    return decoded


EVENTS = ("call.started", "call.answered", "call.completed", "recording.ready", "form.submitted")


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where a client wants events; ``secret`` signs each delivery (shown on creation only)."""

    id: UUID
    client_id: UUID
    url: str
    secret: str
    events: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to one webhook, and how its attempts went."""

    id: UUID
    client_id: UUID
    webhook_id: UUID
    event: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


WEBHOOKS = TenantTable(
    "webhooks",
    "id, client_id, url, secret, events, created_at, updated_at",
    Webhook,
    updatable=frozenset({"url", "events"}),
)
DELIVERIES = TenantTable(
    "webhook_deliveries",
    "id, client_id, webhook_id, event, payload, attempts, next_attempt_at, last_status, "
    "last_error, delivered_at, created_at",
    Delivery,
    updatable=frozenset(),
    filterable=frozenset({"webhook_id"}),
)


CHANGED_CHANNEL = "webhooks_changed"
"""NOTIFYed on every change to the webhooks table (migration 0017's trigger)."""


async def wanted_events(db: Executor) -> dict[UUID, frozenset[str]]:
    """Every client with a webhook: the events its webhooks want between them. Read whole,
    across clients: it tells the sender which events need a query at all."""
    rows = await db.fetch(
        "SELECT client_id, array_agg(DISTINCT event) AS events"
        " FROM webhooks, unnest(events) AS event GROUP BY client_id"
    )
    return {row["client_id"]: frozenset(row["events"]) for row in rows}


async def enqueue(
    db: Executor,
    client_id: UUID,
    event: str,
    payload: dict[str, Any],
    *,
    event_id: UUID | None = None,
) -> int:
    """A delivery for each of the client's webhooks that wants ``event``; how many.

    :param event_id: a UUIDv7 naming this event: enqueued again (a retry after the database
        went away, when the first try may have committed), it adds no second delivery.
    """
    rows = await db.fetch(
        "SELECT id FROM webhooks WHERE client_id = $1 AND $2 = ANY(events)", client_id, event
    )
    if rows:
        await db.executemany(
            """INSERT INTO webhook_deliveries (id, client_id, webhook_id, event, payload,
                                               next_attempt_at)
               VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (id) DO NOTHING""",
            [
                (
                    derived_id(event_id, row["id"]) if event_id else new_id(),
                    client_id,
                    row["id"],
                    event,
                    payload,
                )
                for row in rows
            ],
        )
    return len(rows)


async def enqueue_raised(db: Executor, raised: Sequence[WebhookRaised]) -> int:
    """A delivery for each webhook that wants each of the call journal's ``raised`` events,
    in two statements for the whole batch; how many were new.

    Each delivery's id is derived from its event's and its webhook's, so a batch replayed
    from the spool (the database had it, but the kill came before the spool heard so) adds
    nothing. A webhook made after the event was raised gets it too, as it would with
    ``enqueue`` at that time.
    """
    hooks = await db.fetch(
        "SELECT id, client_id, events FROM webhooks WHERE client_id = ANY($1::uuid[])",
        list({r.client_id for r in raised}),
    )
    rows = [
        (derived_id(r.event_id, hook["id"]), r.client_id, hook["id"], r.event, r.payload)
        for r in raised
        for hook in hooks
        if hook["client_id"] == r.client_id and r.event in hook["events"]
    ]
    if not rows:
        return 0
    inserted = await db.fetch(
        """INSERT INTO webhook_deliveries (id, client_id, webhook_id, event, payload,
                                           next_attempt_at)
           SELECT *, now() FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
                                       $5::jsonb[])
           ON CONFLICT (id) DO NOTHING RETURNING id""",
        *(list(column) for column in zip(*rows, strict=True)),
    )
    return len(inserted)


async def enqueue_one(db: Executor, hook: Webhook, event: str, payload: dict[str, Any]) -> None:
    """A delivery to one webhook whatever its event list (the test-fire route)."""
    await db.execute(
        """INSERT INTO webhook_deliveries (id, client_id, webhook_id, event, payload,
                                           next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, now())""",
        new_id(),
        hook.client_id,
        hook.id,
        event,
        payload,
    )


async def due(db: Executor, limit: int) -> list[tuple[Delivery, str, str]]:
    """Deliveries whose next attempt is due, with their webhook's URL and secret; they are
    pushed a minute ahead so a second sender (another process) does not take them too."""
    rows = await db.fetch(
        """UPDATE webhook_deliveries d SET next_attempt_at = now() + interval '1 minute'
           FROM webhooks w
           WHERE w.id = d.webhook_id AND d.id IN (
               SELECT id FROM webhook_deliveries
               WHERE next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1
               FOR UPDATE SKIP LOCKED)
           RETURNING d.id, d.client_id, d.webhook_id, d.event, d.payload, d.attempts,
                     d.next_attempt_at, d.last_status, d.last_error, d.delivered_at,
                     d.created_at, w.url, w.secret""",
        limit,
    )
    out = []
    for row in rows:
        values = dict(row)
        url, secret = values.pop("url"), values.pop("secret")
        out.append((Delivery(**values), url, secret))
    return out


async def record_attempt(
    db: Executor,
    delivery_id: UUID,
    *,
    status: int | None,
    error: str | None,
    retry_in: float | None,
) -> None:
    """Note an attempt: delivered (``retry_in`` None and no error), or when to try again (or
    never, when ``retry_in`` is None after a failure)."""
    delivered = error is None and status is not None and 200 <= status < 300
    await db.execute(
        """UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2,
               last_error = $3,
               delivered_at = CASE WHEN $4 THEN now() ELSE NULL END,
               next_attempt_at = CASE WHEN $4 OR $5::float8 IS NULL THEN NULL
                                      ELSE now() + make_interval(secs => $5) END
           WHERE id = $1""",
        delivery_id,
        status,
        error,
        delivered,
        retry_in,
    )


async def recent_deliveries(
    db: Executor, client_id: UUID, webhook_id: UUID, limit: int
) -> list[Delivery]:
    """A webhook's latest deliveries, newest first (the console's delivery log)."""
    rows = await db.fetch(
        f"SELECT {DELIVERIES.columns} FROM webhook_deliveries "
        "WHERE client_id = $1 AND webhook_id = $2 ORDER BY id DESC LIMIT $3",
        client_id,
        webhook_id,
        limit,
    )
    return [Delivery(**row) for row in rows]
