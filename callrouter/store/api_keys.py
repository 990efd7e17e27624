"""API keys: random secrets shown once, stored as SHA-256, revocable.

A key looks like ``crk_<40 url-safe characters>`` (240 random bits). Operator keys have no client;
client keys act only within their client.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.store.database import Executor
from callrouter.store.ids import new_id
from callrouter.store.tenant_table import TenantTable

KEY_PREFIX = "crk_"
_SHOWN = 8  # characters of the secret kept in clear for listings
REVOKED_CHANNEL = "api_key_revoked"
_COLUMNS = "id, client_id, name, prefix, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public facts; the secret itself is never stored."""

    id: UUID
    client_id: UUID | None
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the operator (client_id None) or one client."""

    key_id: UUID
    client_id: UUID | None

    @property
    def is_operator(self) -> bool:
        return self.client_id is None


API_KEYS = TenantTable("api_keys", _COLUMNS, ApiKey, updatable=frozenset())


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


async def create(db: Executor, client_id: UUID | None, name: str) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret cannot be recovered later."""
    secret = generate_secret()
    row = await db.fetchrow(
        f"""INSERT INTO api_keys (id, client_id, name, prefix, secret_hash)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
        new_id(),
        client_id,
        name,
        secret[: len(KEY_PREFIX) + _SHOWN],
        hash_secret(secret),
    )
    assert row is not None
    return ApiKey(**row), secret


async def authenticate(db: Executor, secret: str) -> Principal | None:
    """The principal of a live key, or None for an unknown or revoked one."""
    if not secret.startswith(KEY_PREFIX):
        return None
    row = await db.fetchrow(
        "SELECT id, client_id FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL",
        hash_secret(secret),
    )
    return Principal(row["id"], row["client_id"]) if row else None


async def revoke(db: Executor, key_id: UUID, scope: UUID | None) -> ApiKey | None:
    """Revoke a key (idempotent); None if ``scope`` cannot see it.

    Every server process LISTENs on ``REVOKED_CHANNEL`` and drops the key from its cache.
    """
    row = await db.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2) RETURNING {_COLUMNS}""",
        key_id,
        scope,
    )
    if row is None:
        return None
    await db.execute("SELECT pg_notify($1, $2)", REVOKED_CHANNEL, str(key_id))
    return ApiKey(**row)


async def count_operator_keys(db: Executor) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM api_keys WHERE client_id IS NULL")
    return count
