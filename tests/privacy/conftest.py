"""Privacy fixtures: the API with privacy rights, recordings on the real vault, and a client
whose caller has left every kind of trace (calls, visits, forms, a recording, webhooks)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callrouter.api.auth import Authenticator
from callrouter.api.server import build_api
from callrouter.call_events import CallAnswered, CallEnded, CallStarted
from callrouter.config import load_config
from callrouter.privacy.rights import PrivacyRights
from callrouter.privacy.subjects import phone_formats
from callrouter.ratelimit import TokenBuckets
from callrouter.recordings import Recordings
from callrouter.routing.sessions import Sessions
from callrouter.store import api_keys
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import Executor, create_pool
from callrouter.store.ids import new_id
from callrouter.vault import Vault
from callrouter.webhooks import WebhookSender
from tests.api.conftest import MAX_BODY, Api, FakeClock

CALLER = "+447700900123"
"""The data subject of most tests."""
SPELLINGS = phone_formats(CALLER).spellings
"""+447700900123, 447700900123, 00447700900123, 07700900123, 07700 900123, +44 7700 900123."""
OTHER_CALLER = "+447700900456"
"""Someone else, whose data must survive the subject's erasure."""
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ORIGIN = "https://www.acme.example"
PAGE = ORIGIN + "/dentist?utm_source=google&utm_medium=cpc&utm_campaign=spring"
# Audio the tests recognise byte for byte (a real recording would be FLAC).
AUDIO = b"fLaC" + bytes(range(256)) * 64
OTHER_AUDIO = b"fLaC" + bytes(reversed(range(256))) * 64


@dataclass
class WallClock:
    """UTC time that moves only when a test moves it."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


class VaultArchive(Recordings):
    """The real recordings service, plus what the tests need around it: writing a file as the
    media worker does, decrypting one, and the list of recordings it shredded."""

    def __init__(self, db: asyncpg.Pool[asyncpg.Record], vault: Vault, root: Path) -> None:
        super().__init__(db, vault, root)
        self.disposed: list[UUID] = []

    def store(self, recording_id: UUID, path: str, audio: bytes) -> None:
        """Write an encrypted recording file, as the media worker does."""
        self.vault.create_key(recording_id)
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.vault.writer(recording_id, target) as out:
            out.write(audio)

    def decrypt(self, recording_id: UUID, path: Path) -> bytes:
        with self.vault.reader(recording_id, path) as source:
            return b"".join(source)

    def _shred(self, recording_id: UUID, path: str) -> None:
        super()._shred(recording_id, path)
        self.disposed.append(recording_id)


@dataclass
class Forgetful:
    """Stands for the router's sessions in memory: records what erasure told it to forget."""

    forgotten: list[UUID] = field(default_factory=list)

    def forget(self, session_ids: Any) -> None:
        self.forgotten.extend(session_ids)


@dataclass
class PrivacyApi(Api):
    """The API with privacy rights wired as ``serve`` wires them."""

    rights: PrivacyRights
    archive: VaultArchive
    wall: WallClock
    data_dir: Path
    recordings_dir: Path
    live: Forgetful
    listener: asyncpg.Connection[Any]


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield private_dir(tmp_path / "data")


@pytest.fixture
async def api(database_dsn: str, data_dir: Path) -> AsyncIterator[PrivacyApi]:
    pool = await create_pool(database_dsn, min_size=1, max_size=4)
    listener = await asyncpg.connect(database_dsn)
    config = load_config(None, {}, {"data_dir": str(data_dir)})
    recordings_dir = private_dir(data_dir / "recordings")
    vault = Vault.open(data_dir / "vault" / "keyring.json", data_dir / "vault" / "keys")
    archive = VaultArchive(pool, vault, recordings_dir)
    live = Forgetful()
    rights = await PrivacyRights.open(
        pool, config, listener=listener, archive=archive, live_sessions=live
    )
    wall = WallClock()
    rights.clock = wall
    authenticator = Authenticator(pool, TokenBuckets(1000, 1000), TokenBuckets(1.0, 20))
    clock = FakeClock(wall.now.timestamp())
    sessions = Sessions(pool, clock)
    webhooks = WebhookSender(pool, allow_private=True, retry_base=0.01)
    app = build_api(
        pool,
        authenticator,
        max_body_bytes=MAX_BODY,
        visitor_sessions=sessions,
        public_rate=TokenBuckets(1000, 1000),
        webhook_sender=webhooks,
        privacy_rights=rights,
        recordings_service=archive,
    )
    http = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    _, secret = await api_keys.create(pool, None, "test operator")
    try:
        yield PrivacyApi(
            http,
            pool,
            secret,
            sessions,
            clock,
            webhooks,
            archive,
            rights,
            archive,
            wall,
            data_dir,
            recordings_dir,
            live,
            listener,
        )
    finally:
        await http.close()
        await listener.close()
        await pool.close()


@dataclass
class Tenant:
    """One client with a caller (``CALLER``) and another caller (``OTHER_CALLER``)."""

    client_id: str
    key: str
    pool: dict[str, Any]
    sessions: dict[str, str]
    """s1, s2: the caller's visits (same visitor id); s3: a stranger whose form mentions the
    caller's number; s4: the other caller's visit."""
    forms: dict[str, str]
    """f1: the caller's own form (on s1); f3: the stranger's form naming the caller's number;
    f4: the other caller's form."""
    calls: dict[str, UUID]
    """c1: the caller via s1 (recorded); c2: the caller again, no visit; c3: the other caller
    via s4 (recorded)."""
    recordings: dict[str, tuple[UUID, str]]
    """r1 (of c1) and r3 (of c3): id and path under the recordings directory."""

    @property
    def client(self) -> UUID:
        return UUID(self.client_id)


async def start_session(api: Api, pool: dict[str, Any], visitor: str, page: str = PAGE) -> str:
    reply = await api.call(
        "POST",
        "/v1/sessions",
        json={"pool_key": pool["public_key"], "visitor_id": visitor, "page_url": page},
        headers={"Origin": ORIGIN},
    )
    assert reply.status == 201, reply.body
    session_id: str = reply.body["session_id"]
    return session_id


async def submit_form(
    api: Api, pool: dict[str, Any], session_id: str, fields: dict[str, str]
) -> str:
    reply = await api.call(
        "POST",
        "/v1/forms",
        json={
            "pool_key": pool["public_key"],
            "session_id": session_id,
            "form": "contact",
            "page_url": ORIGIN + "/contact",
            "fields": fields,
        },
        headers={"Origin": ORIGIN},
    )
    assert reply.status == 201, reply.body
    form_id: str = reply.body["id"]
    return form_id


async def record_call(
    api: Api,
    client: UUID,
    caller: str | None,
    *,
    at: datetime,
    session: str | None = None,
    attribution: dict[str, Any] | None = None,
    answered: bool = True,
) -> UUID:
    call_id = new_id()
    async with CallJournal(api.db) as journal:
        journal.record(
            CallStarted(
                call_id=call_id,
                client_id=client,
                number_id=None,
                tracking_number="+441515550100",
                caller_number=caller,
                sip_call_id=f"{call_id}@carrier",
                trunk=None,
                dialplan="default",
                session_id=UUID(session) if session else None,
                attribution=attribution or {},
                record=True,
                at=at,
            )
        )
        if answered:
            journal.record(CallAnswered(call_id, at + timedelta(seconds=3)))
        journal.record(
            CallEnded(
                call_id,
                "answered" if answered else "no_answer",
                "caller",
                "BYE",
                at + timedelta(minutes=2),
            )
        )
        await journal.flushed()
    return call_id


async def add_recording(
    api: PrivacyApi, client: UUID, call_id: UUID, audio: bytes, at: datetime
) -> tuple[UUID, str]:
    """A recording row and its encrypted file, as the recordings service leaves them."""
    recording_id = new_id()
    path = f"{recording_id}.flac"  # flat, as the media worker writes them
    await asyncio.to_thread(api.archive.store, recording_id, path, audio)
    await api.db.execute(
        """INSERT INTO recordings (id, client_id, call_id, format, path, bytes,
               duration_seconds, peaks, started_at, ended_at)
           VALUES ($1, $2, $3, 'flac', $4, $5, 120.0, '[]', $6, $7)""",
        recording_id,
        client,
        call_id,
        path,
        len(audio),
        at,
        at + timedelta(minutes=2),
    )
    return recording_id, path


async def make_tenant(api: PrivacyApi, name: str = "Acme", numbers: str = "+44151555010") -> Tenant:
    """A client whose caller called twice (once recorded), visited twice, filled a form, and
    is named in a stranger's form; and another caller with a call, a visit, a form and a
    recording of their own. Webhooks were queued for the calls and forms."""
    client_id, key = await api.client_with_key(name)
    client = UUID(client_id)
    pool = await api.ok(
        "POST",
        "/v1/pools",
        json={
            "client_id": client_id,
            "name": "website",
            "allowed_origins": [ORIGIN],
            "form_fields": ["phone", "name", "message"],
            "lease_hold_seconds": 60,
        },
    )
    for i in range(4):
        await api.ok(
            "POST",
            "/v1/numbers",
            json={
                "client_id": client_id,
                "e164": f"{numbers}{i}",
                "pool_id": pool["id"],
            },
        )
    await api.sessions.reload(UUID(pool["id"]))
    await api.ok(
        "POST",
        "/v1/webhooks",
        key,
        {"url": "https://hooks.example/in", "events": ["call.completed", "form.submitted"]},
    )
    s1 = await start_session(api, pool, "visitor-1")
    api.clock.now += 61  # past the pool's hold: the visitor's next page is a return visit
    sessions = {
        "s1": s1,
        "s2": await start_session(api, pool, "visitor-1", ORIGIN + "/prices"),
        "s3": await start_session(api, pool, "visitor-9"),
        "s4": await start_session(api, pool, "visitor-7"),
    }
    forms = {
        "f1": await submit_form(
            api, pool, sessions["s1"], {"phone": "07700 900123", "name": "Jane Doe"}
        ),
        "f3": await submit_form(
            api, pool, sessions["s3"], {"message": "please call my friend on +44 7700 900123"}
        ),
        "f4": await submit_form(api, pool, sessions["s4"], {"phone": "07700 900456"}),
    }
    visit = await api.sessions.visit(UUID(sessions["s1"]))
    assert visit is not None
    calls = {
        "c1": await record_call(
            api, client, CALLER, at=T0, session=sessions["s1"], attribution=visit.record.attribution
        ),
        "c2": await record_call(
            api, client, CALLER, at=T0 + timedelta(days=1), attribution={"source": "newsletter"}
        ),
        "c3": await record_call(
            api,
            client,
            OTHER_CALLER,
            at=T0 + timedelta(hours=2),
            session=sessions["s4"],
            attribution={"source": "google", "medium": "cpc"},
        ),
    }
    for name_, caller in (("c1", CALLER), ("c3", OTHER_CALLER)):
        await api.webhooks.emit(
            client,
            "call.completed",
            {"call_id": calls[name_], "caller_number": caller, "disposition": "answered"},
        )
    recordings = {
        "r1": await add_recording(api, client, calls["c1"], AUDIO, T0),
        "r3": await add_recording(api, client, calls["c3"], OTHER_AUDIO, T0 + timedelta(hours=2)),
    }
    return Tenant(client_id, key, pool, sessions, forms, calls, recordings)


async def find_everywhere(db: Executor, needles: tuple[str, ...]) -> list[str]:
    """Every table.column (in the public schema) holding any needle in its text form."""
    columns = await db.fetch(
        """SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           ORDER BY 1, 2"""
    )
    found = []
    for column in columns:
        table, name = column["table_name"], column["column_name"]
        for needle in needles:
            if column["data_type"] == "bytea":
                condition = f"position(convert_to($1, 'UTF8') in \"{name}\") > 0"
            else:
                condition = f"\"{name}\"::text LIKE '%' || $1 || '%'"
            hits = await db.fetchval(f'SELECT count(*) FROM "{table}" WHERE {condition}', needle)
            if hits:
                found.append(f"{table}.{name}: {needle!r}")
    return found


def files_containing(root: Path, needles: tuple[bytes, ...]) -> list[str]:
    """Every file under ``root`` holding any of the byte strings."""
    found = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            data = path.read_bytes()
            found += [f"{path}: {needle[:16]!r}" for needle in needles if needle in data]
    return found
