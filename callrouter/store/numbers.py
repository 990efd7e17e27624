"""Tracking numbers: each routes to a destination through a dialplan, maybe from a pool."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor
from callrouter.store.tenant_table import TenantTable

_COLUMNS = (
    "id, client_id, e164, pool_id, destination, dialplan, dialplan_params, record, "
    "label, source, medium, campaign, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class Number:
    """A tracking number (DID) and how its calls are handled."""

    id: UUID
    client_id: UUID
    e164: str
    pool_id: UUID | None
    destination: str | None
    dialplan: str
    dialplan_params: dict[str, Any]
    record: bool
    label: str | None
    source: str | None
    medium: str | None
    campaign: str | None
    created_at: datetime
    updated_at: datetime


NUMBERS = TenantTable(
    "numbers",
    _COLUMNS,
    Number,
    updatable=frozenset(
        {
            "pool_id",
            "destination",
            "dialplan",
            "dialplan_params",
            "record",
            "label",
            "source",
            "medium",
            "campaign",
        }
    ),
    constraints={"numbers_e164_key": "e164", "numbers_client_id_pool_id_fkey": "pool_id"},
    filterable=frozenset({"pool_id", "e164"}),
)


async def list_all(db: Executor) -> list[Number]:
    """Every number of every client: the router loads these into its hot registry."""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM numbers ORDER BY id")
    return [Number(**row) for row in rows]


async def find_by_e164(db: Executor, e164: str) -> Number | None:
    """The number a carrier dialled. Not tenant-scoped on purpose: the dialled number is what
    decides the tenant, and nothing of it is shown to the caller."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM numbers WHERE e164 = $1", e164)
    return Number(**row) if row else None


async def get_any(db: Executor, number_id: UUID) -> Number | None:
    """One number by id, whoever owns it (the router's pool default number)."""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM numbers WHERE id = $1", number_id)
    return Number(**row) if row else None
