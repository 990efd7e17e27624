"""Clients: the operator's customers, the unit of tenancy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.store.tenant_table import TenantTable


@dataclass(frozen=True, slots=True)
class Client:
    """A client of the operator (a website owner)."""

    id: UUID
    name: str
    created_at: datetime
    updated_at: datetime


# A client's scope is itself: a client key sees exactly one client row.
CLIENTS = TenantTable(
    "clients",
    "id, name, created_at, updated_at",
    Client,
    updatable=frozenset({"name"}),
    scope_column="id",
)
