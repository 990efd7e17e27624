"""Retention on a fake clock: exactly what is past its period goes, the way erasure removes it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest

from callrouter.call_events import CallStarted
from callrouter.privacy.erasure import Removed
from callrouter.privacy.retention import RetentionDefaults, next_purge_at, purge, run_daily
from callrouter.store import reports
from callrouter.store import sessions as session_store
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import create_pool
from callrouter.store.ids import new_id
from callrouter.store.sessions import SessionRecord
from tests.privacy.conftest import AUDIO, PrivacyApi, add_recording, record_call

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DEFAULTS = RetentionDefaults(recordings_days=30, data_days=90)


def ago(days: int) -> datetime:
    return NOW - timedelta(days=days)


@dataclass
class Client:
    id: UUID
    calls: dict[str, UUID]
    recordings: dict[str, UUID]
    sessions: dict[str, UUID]
    forms: dict[str, UUID]
    deliveries: dict[str, UUID]


async def visit(db: asyncpg.Pool[asyncpg.Record], client: UUID, pool: UUID, seen: datetime) -> UUID:
    session = SessionRecord(
        new_id(),
        client,
        pool,
        "visitor",
        None,
        {"source": "google"},
        "Firefox",
        "192.0.2.0",
        seen,
        seen,
        None,
        True,
    )
    await session_store.save_many(db, [session])
    return session.id


async def form(db: asyncpg.Pool[asyncpg.Record], session_id: UUID, at: datetime) -> UUID:
    session = await session_store.get(db, session_id)
    assert session is not None
    form_id = new_id()
    await session_store.insert_form(
        db,
        form_id=form_id,
        session=session,
        form="contact",
        fields={"name": "Jo"},
        page=None,
        at=at,
    )
    return form_id


async def delivery(
    db: asyncpg.Pool[asyncpg.Record], client: UUID, hook: UUID, at: datetime
) -> UUID:
    delivery_id = new_id()
    await db.execute(
        """INSERT INTO webhook_deliveries (id, client_id, webhook_id, event, payload, created_at)
           VALUES ($1, $2, $3, 'webhook.test', '{"data": {}}', $4)""",
        delivery_id,
        client,
        hook,
        at,
    )
    return delivery_id


async def make_client(api: PrivacyApi, name: str, *, recordings_days: int | None = None) -> Client:
    client_id, _ = await api.client_with_key(name)
    client = UUID(client_id)
    await api.db.execute(
        "UPDATE clients SET recordings_retention_days = $2 WHERE id = $1", client, recordings_days
    )
    pool = await api.ok("POST", "/v1/pools", json={"client_id": client_id, "name": "site"})
    hook = await api.ok(
        "POST",
        "/v1/webhooks",
        json={"client_id": client_id, "url": "https://h.example/", "events": ["call.completed"]},
    )
    calls = {
        "old": await record_call(api, client, "+447700900001", at=ago(100)),  # past both
        "mid": await record_call(api, client, "+447700900002", at=ago(60)),  # recording past
        "new": await record_call(api, client, "+447700900003", at=ago(5)),
        "edge": await record_call(api, client, "+447700900004", at=ago(90) + timedelta(seconds=1)),
    }
    recordings = {
        name: (await add_recording(api, client, calls[name], AUDIO, ago(days)))[0]
        for name, days in (("old", 100), ("mid", 60), ("new", 5))
    }
    pool_id = UUID(pool["id"])
    sessions = {
        "old": await visit(api.db, client, pool_id, ago(100)),
        "kept": await visit(api.db, client, pool_id, ago(80)),
    }
    forms = {
        "old": await form(api.db, sessions["old"], ago(100)),
        "kept": await form(api.db, sessions["kept"], ago(80)),
    }
    deliveries = {
        "old": await delivery(api.db, client, UUID(hook["id"]), ago(91)),
        "kept": await delivery(api.db, client, UUID(hook["id"]), ago(89)),
    }
    return Client(client, calls, recordings, sessions, forms, deliveries)


async def remaining(api: PrivacyApi, table: str, client: UUID) -> set[UUID]:
    rows = await api.db.fetch(f"SELECT id FROM {table} WHERE client_id = $1", client)
    return {row["id"] for row in rows}


async def test_exactly_what_is_past_its_period_is_removed(api: PrivacyApi) -> None:
    a = await make_client(api, "A")
    b = await make_client(api, "B", recordings_days=70)  # its own period, longer than 30
    live = new_id()  # a call in progress since long ago is never purged
    async with CallJournal(api.db) as journal:
        journal.record(
            CallStarted(
                live,
                a.id,
                None,
                "+441515550001",
                "+447700900009",
                "x@y",
                None,
                None,
                None,
                {},
                False,
                ago(200),
            )
        )
        await journal.flushed()
    window = (ago(400), NOW)
    report_before = await reports.attribution(api.db, a.id, "source", *window)

    dry = await purge(api.db, NOW, DEFAULTS, True)
    assert dry.dry_run
    expected_a = Removed(calls=1, recordings=2, sessions=1, forms=1, webhook_deliveries=1)
    expected_b = Removed(calls=1, recordings=1, sessions=1, forms=1, webhook_deliveries=1)
    assert {c.client_id: c.removed for c in dry.clients} == {a.id: expected_a, b.id: expected_b}
    assert await remaining(api, "calls", a.id) == {*a.calls.values(), live}  # nothing went

    done = await purge(api.db, NOW, DEFAULTS, False, archive=api.archive)
    assert {c.client_id: c.removed for c in done.clients} == {a.id: expected_a, b.id: expected_b}
    assert done.shredding == "done"
    assert "removed 2 calls, 3 recordings, 2 sessions, 2 forms" in done.summary()

    assert await remaining(api, "calls", a.id) == {
        a.calls["mid"],
        a.calls["new"],
        a.calls["edge"],
        live,
    }
    assert await remaining(api, "recordings", a.id) == {a.recordings["new"]}
    assert await remaining(api, "recordings", b.id) == {b.recordings["mid"], b.recordings["new"]}
    assert await remaining(api, "sessions", a.id) == {a.sessions["kept"]}
    assert await remaining(api, "forms", a.id) == {a.forms["kept"]}
    assert await remaining(api, "webhook_deliveries", a.id) == {a.deliveries["kept"]}
    assert await api.db.fetchval("SELECT count(*) FROM recording_disposals") == 0
    assert set(api.archive.disposed) == {
        a.recordings["old"],
        a.recordings["mid"],
        b.recordings["old"],
    }

    # Reports still count the purged call and form, from their anonymous daily counts.
    assert await reports.attribution(api.db, a.id, "source", *window) == report_before
    # Every deletion is on record, batch by batch, with counts and no personal data.
    audit = await api.db.fetch(
        "SELECT client_id, actor, counts FROM privacy_audit WHERE action = 'retention.purge'"
    )
    assert {(r["client_id"], r["actor"]) for r in audit} == {
        (a.id, "retention"),
        (b.id, "retention"),
    }
    audited: dict[UUID, Removed] = {}
    for row in audit:
        audited[row["client_id"]] = audited.get(row["client_id"], Removed()) + Removed(
            **row["counts"]
        )
    assert audited == {a.id: expected_a, b.id: expected_b}
    assert (await purge(api.db, NOW, DEFAULTS, False)).clients == ()  # nothing more to do


async def test_the_purge_runs_at_start_then_daily_at_its_hour(database_dsn: str) -> None:
    assert next_purge_at(datetime(2026, 11, 23, 2, 30, tzinfo=UTC), 3) == datetime(
        2026, 11, 23, 3, 0, tzinfo=UTC
    )
    assert next_purge_at(datetime(2026, 11, 23, 3, 0, tzinfo=UTC), 3) == datetime(
        2026, 11, 24, 3, 0, tzinfo=UTC
    )
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    clock = [datetime(2026, 11, 23, 2, 30, tzinfo=UTC)]
    slept: list[float] = []
    announced: list[str] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    try:
        with pytest.raises(asyncio.CancelledError):
            await run_daily(
                pool,
                DEFAULTS,
                hour=3,
                clock=lambda: clock[0],
                announce=announced.append,
                sleep=sleep,
            )
    finally:
        await pool.close()
    assert slept == [1800.0, 86400.0, 86400.0]
    assert announced == []  # nothing was past its period
