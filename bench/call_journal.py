"""Call events/s written by the call journal's batch statements versus one statement per event.

The reference, measured in the same run on the same embedded PostgreSQL, is what the journal
did before (its per-event SQL, kept here as it was): every event its own statement, each batch
in one transaction. Both write the same
calls (ten events each: two destinations tried, the second answers, the caller hangs up) in
batches of ``--batch`` events; printed: events/s for each, the ratio, and the statements each
sends per batch. Then the batched writer again with a webhook that wants each call's three
webhook events (call.started, call.answered, call.completed), which ride the journal as events
of their own: calls/s with and without them.

usage: python3 bench/call_journal.py [--calls 5000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.call_events import (  # noqa: E402
    AttemptAnswered,
    AttemptEnded,
    AttemptRinging,
    AttemptStarted,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    RecordingRefused,
    WebhookRaised,
)
from callrouter.store.call_rows import write_batch  # noqa: E402
from callrouter.store.clients import CLIENTS  # noqa: E402
from callrouter.store.database import Executor, connect, ensure_database  # noqa: E402
from callrouter.store.embedded import DATABASE, EmbeddedPostgres  # noqa: E402
from callrouter.store.ids import new_id  # noqa: E402
from callrouter.store.migrations import migrate  # noqa: E402
from callrouter.store.webhooks import WEBHOOKS, enqueue  # noqa: E402
from tests.store.test_call_rows import whole_call  # noqa: E402

ROLL_UPS = (
    "calls_first_call",
    "calls_rolled_up_insert",
    "calls_rolled_up_update",
    "calls_rolled_up_delete",
)
"""The console's triggers on calls (migration 0012)."""

Writer = Callable[[Executor, Sequence[CallEvent]], Awaitable[object]]


async def apply(connection: Executor, event: CallEvent) -> None:
    """The reference: the journal's SQL for one event before batching (commit 984ef3b)."""
    match event:
        case CallStarted():
            await connection.execute(
                """INSERT INTO calls (id, client_id, number_id, tracking_number, caller_number,
                       sip_call_id, trunk, dialplan, session_id, attribution, record, started_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   ON CONFLICT (id) DO NOTHING""",
                event.call_id,
                event.client_id,
                event.number_id,
                event.tracking_number,
                event.caller_number,
                event.sip_call_id,
                event.trunk,
                event.dialplan,
                event.session_id,
                event.attribution,
                event.record,
                event.at,
            )
        case CallRinging():
            await connection.execute(
                "UPDATE calls SET ringing_at = coalesce(ringing_at, $2) WHERE id = $1",
                event.call_id,
                event.at,
            )
        case CallAnswered():
            await connection.execute(
                "UPDATE calls SET state = 'active', answered_at = $2 WHERE id = $1 "
                "AND state <> 'ended'",
                event.call_id,
                event.at,
            )
        case CallEnded():
            await connection.execute(
                """UPDATE calls SET state = 'ended', disposition = $2, hangup_by = $3,
                       hangup_reason = $4, ended_at = $5
                   WHERE id = $1 AND state <> 'ended'""",
                event.call_id,
                event.disposition,
                event.hangup_by,
                event.reason,
                event.at,
            )
        case AttemptStarted():
            await connection.execute(
                """INSERT INTO call_attempts (call_id, seq, destination, started_at)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
                event.call_id,
                event.seq,
                event.destination,
                event.at,
            )
        case AttemptRinging():
            await connection.execute(
                "UPDATE call_attempts SET ringing_at = coalesce(ringing_at, $3) "
                "WHERE call_id = $1 AND seq = $2",
                event.call_id,
                event.seq,
                event.at,
            )
        case AttemptAnswered():
            await connection.execute(
                "UPDATE call_attempts SET answered_at = $3 WHERE call_id = $1 AND seq = $2",
                event.call_id,
                event.seq,
                event.at,
            )
        case AttemptEnded():
            await connection.execute(
                """UPDATE call_attempts SET result = $3, sip_status = $4, reason = $5,
                       ended_at = $6
                   WHERE call_id = $1 AND seq = $2 AND ended_at IS NULL""",
                event.call_id,
                event.seq,
                event.result,
                event.sip_status,
                event.reason,
                event.at,
            )
        case RecordingRefused():
            await connection.execute(
                "UPDATE calls SET not_recorded_reason = $2 WHERE id = $1",
                event.call_id,
                event.reason,
            )


async def one_statement_per_event(connection: Executor, batch: Sequence[CallEvent]) -> None:
    for event in batch:
        await apply(connection, event)


def with_webhooks(call: list[CallEvent], client: UUID) -> list[CallEvent]:
    """A whole call's events with the webhook events the B2BUA raises among them, each with
    a payload of the size a real one has."""
    first = call[0]
    assert isinstance(first, CallStarted)

    def raised(event: str) -> WebhookRaised:
        data = {
            "call_id": str(first.call_id),
            "tracking_number": first.tracking_number,
            "caller_number": first.caller_number,
            "session_id": None,
            "attribution": {"source": "google", "medium": "cpc", "campaign": "winter"},
        }
        payload = {"event": event, "created_at": first.at.isoformat(), "data": data}
        return WebhookRaised(first.call_id, client, new_id(), event, payload, first.at)

    return [
        first,
        raised("call.started"),
        *call[1:8],
        raised("call.answered"),
        *call[8:],
        raised("call.completed"),
    ]


async def enqueued_one_by_one(connection: Executor, batch: Sequence[CallEvent]) -> None:
    """The reference for webhook events: the calls batched, each webhook event queued alone
    (a look-up and an insert), as the webhook sender did before they rode the journal."""
    await write_batch(connection, batch)
    for event in batch:
        if isinstance(event, WebhookRaised):
            await enqueue(
                connection, event.client_id, event.event, event.payload, event_id=event.event_id
            )


async def run(
    dsn: str,
    client: UUID,
    calls: int,
    batch_size: int,
    write: Writer,
    *,
    webhooks: bool = False,
) -> tuple[float, int]:
    """(events/s, statements per batch)"""
    start_at = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    events: list[CallEvent] = []
    for n in range(calls):
        call = whole_call(new_id(), client, start_at + timedelta(minutes=n))
        events += with_webhooks(call, client) if webhooks else call
    connection = await connect(dsn)
    sent: list[str] = []
    connection.add_query_logger(lambda record: sent.append(record.query))
    try:
        began = time.perf_counter()
        batches = 0
        for first in range(0, len(events), batch_size):
            async with connection.transaction():
                await write(connection, events[first : first + batch_size])
            batches += 1
        elapsed = time.perf_counter() - began
    finally:
        await connection.close()
    writes = sum("call" in query for query in sent)  # calls or call_attempts, not BEGIN/COMMIT
    return len(events) / elapsed, round(writes / batches)


async def bench(dsn: str, calls: int, batch_size: int) -> None:
    connection = await connect(dsn)
    try:
        await migrate(connection)
        client = (await CLIENTS.insert(connection, {}, {"name": "Bench"})).id
    finally:
        await connection.close()
    await run(dsn, client, min(calls, 200), batch_size, write_batch)  # warm-up
    reference, ref_statements = await run(dsn, client, calls, batch_size, one_statement_per_event)
    batched, statements = await run(dsn, client, calls, batch_size, write_batch)
    # What the console's roll-ups and first-call mark (migration 0012) cost the journal.
    connection = await connect(dsn)
    try:
        await connection.execute(
            f"ALTER TABLE calls DISABLE TRIGGER {', DISABLE TRIGGER '.join(ROLL_UPS)}"
        )
        bare, _ = await run(dsn, client, calls, batch_size, write_batch)
        await connection.execute(
            f"ALTER TABLE calls ENABLE TRIGGER {', ENABLE TRIGGER '.join(ROLL_UPS)}"
        )
    finally:
        await connection.close()
    print(f"{calls} calls, {calls * 10} events, batches of {batch_size} events")
    print(f"one statement per event: {reference:10,.0f} events/s, {ref_statements} per batch")
    print(f"one per table (batched): {batched:10,.0f} events/s, {statements} per batch")
    print(f"ratio batched/reference: {batched / reference:.2f}")
    print(f"batched without the console's roll-up triggers: {bare:10,.0f} events/s")
    print(f"ratio with/without roll-ups: {batched / bare:.2f}")
    # A client whose webhook wants every call event: 13 events a call instead of 10.
    connection = await connect(dsn)
    try:
        hooked = (await CLIENTS.insert(connection, {}, {"name": "Hooked"})).id
        await WEBHOOKS.insert(
            connection,
            {"client_id": hooked, "secret": "bench"},
            {
                "url": "https://hooks.example/bench",
                "events": ["call.started", "call.answered", "call.completed"],
            },
        )
    finally:
        await connection.close()
    plain, _ = await run(dsn, client, calls, batch_size, write_batch)
    with_hooks, _ = await run(dsn, hooked, calls, batch_size, write_batch, webhooks=True)
    alone, _ = await run(dsn, hooked, calls, batch_size, enqueued_one_by_one, webhooks=True)
    print(f"calls/s without webhooks: {plain / 10:10,.0f}")
    print(f"calls/s with three webhook events a call, batched: {with_hooks / 13:10,.0f}")
    print(f"calls/s with them queued one by one (before):      {alone / 13:10,.0f}")
    print(f"ratio with/without webhooks: {with_hooks / 13 / (plain / 10):.2f}")
    print(f"ratio batched/one by one: {with_hooks / alone:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        Path(work).chmod(0o711)  # run as root, PostgreSQL runs as the callrouter user
        database = EmbeddedPostgres(Path(work) / "postgres")
        database.start()
        try:
            asyncio.run(ensure_database(database.admin_dsn, DATABASE))
            asyncio.run(bench(database.dsn, args.calls, args.batch))
        finally:
            database.stop()


if __name__ == "__main__":
    main()
