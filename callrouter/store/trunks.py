"""Trunks: the carriers that send us calls and the gateways that take our outbound calls.

Trunks are operator data: no client owns one, so every statement runs with the operator's
(empty) scope.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.store.database import Executor
from callrouter.store.tenant_table import TenantTable

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrunkRow:
    """One trunk as stored (see migration 0006 for what each column means)."""

    id: UUID
    name: str
    networks: list[IpNetwork]
    number_from: str
    country: str
    nat: bool
    keepalives: bool
    uri: str | None
    caller_id: str
    caller_id_number: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "id, name, networks, number_from, country, nat, keepalives, uri, caller_id, "
    "caller_id_number, "
    "created_at, updated_at"
)

TRUNKS = TenantTable(
    "trunks",
    _COLUMNS,
    TrunkRow,
    updatable=frozenset(
        {
            "name",
            "networks",
            "number_from",
            "country",
            "nat",
            "keepalives",
            "uri",
            "caller_id",
            "caller_id_number",
        }
    ),
    constraints={"trunks_name_key": "name"},
    scope_column="id",
)


async def list_all(db: Executor) -> list[TrunkRow]:
    """Every trunk, by name: what the router loads into memory."""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM trunks ORDER BY name")
    return [TrunkRow(**row) for row in rows]
