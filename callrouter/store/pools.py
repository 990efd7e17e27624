"""Number pools: a client's numbers leased to website visitors (dynamic number insertion)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.store.database import Executor
from callrouter.store.tenant_table import TenantTable

PUBLIC_KEY_PREFIX = "pk_"


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool and its lease settings. ``public_key`` identifies it to the swap script; it is not
    a secret (it is in every page), so what it allows is limited to the pool's origins."""

    id: UUID
    client_id: UUID
    name: str
    public_key: str
    allowed_origins: list[str]
    target_numbers: list[str]
    lease_hold_seconds: int
    grace_seconds: int
    exhaustion_policy: str
    default_number_id: UUID | None
    default_source: str
    form_fields: list[str]
    attribution_model: str
    created_at: datetime
    updated_at: datetime


def new_public_key() -> str:
    return PUBLIC_KEY_PREFIX + secrets.token_urlsafe(18)


POOLS = TenantTable(
    "pools",
    "id, client_id, name, public_key, allowed_origins, target_numbers, lease_hold_seconds, "
    "grace_seconds, exhaustion_policy, default_number_id, default_source, form_fields, "
    "attribution_model, created_at, updated_at",
    Pool,
    updatable=frozenset(
        {
            "name",
            "allowed_origins",
            "target_numbers",
            "lease_hold_seconds",
            "grace_seconds",
            "exhaustion_policy",
            "default_number_id",
            "default_source",
            "form_fields",
            "attribution_model",
        }
    ),
    constraints={
        "pools_client_id_name_key": "name",
        "pools_client_id_default_number_id_fkey": "default_number_id",
    },
)


async def list_all(db: Executor) -> list[Pool]:
    """Every pool of every client: the router keeps them in memory."""
    rows = await db.fetch(f"SELECT {POOLS.columns} FROM pools ORDER BY id")
    return [Pool(**row) for row in rows]


async def get_any(db: Executor, pool_id: UUID) -> Pool | None:
    """One pool by id, whoever owns it (the router's reload on change)."""
    row = await db.fetchrow(f"SELECT {POOLS.columns} FROM pools WHERE id = $1", pool_id)
    return Pool(**row) if row else None
