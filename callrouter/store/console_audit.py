"""The console's audit log: who changed what (never a password, code or token)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from callrouter.store.database import Executor
from callrouter.store.ids import new_id

_COLUMNS = "id, at, client_id, actor, action, target, details, address"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited console action."""

    id: UUID
    at: datetime
    client_id: UUID | None
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    address: str | None


async def insert(
    db: Executor,
    *,
    client_id: UUID | None,
    actor: str,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
    address: str | None = None,
) -> None:
    await db.execute(
        f"INSERT INTO console_audit ({_COLUMNS}) VALUES ($1, now(), $2, $3, $4, $5, $6, $7)",
        new_id(),
        client_id,
        actor,
        action,
        target,
        details or {},
        address,
    )


async def recent(db: Executor, scope: UUID | None, limit: int = 100) -> list[AuditEntry]:
    """The latest entries of one client (``scope``), or of all for the operator."""
    where = "" if scope is None else "WHERE client_id = $2"
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM console_audit {where} ORDER BY id DESC LIMIT $1",
        limit,
        *([scope] if scope else []),
    )
    return [AuditEntry(**row) for row in rows]
