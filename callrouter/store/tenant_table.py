"""Tenant-scoped CRUD in plain SQL, shared by every client-owned table.

Every statement carries the scope: ``scope`` is the acting client's id, or None for the
operator. A client therefore cannot read, change or delete another client's rows even by id;
the API turns "no row" into 404, never 403, so ids of other tenants are not even confirmed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg

from callrouter.store.database import Executor, translate_violation
from callrouter.store.ids import new_id
from callrouter.store.patch import set_clause

Row = TypeVar("Row")


class TenantTable(Generic[Row]):
    """One table whose rows belong to a client.

    :param table: the table name.
    :param columns: the columns read back, matching ``make``'s fields.
    :param make: builds the row dataclass from a record.
    :param updatable: columns a caller may set; everything else is fixed by code.
    :param constraints: constraint name -> request field, for violation errors.
    :param scope_column: the column holding the owning client's id.
    :param filterable: columns ``list_page`` may filter on by equality.
    """

    def __init__(
        self,
        table: str,
        columns: str,
        make: Callable[..., Row],
        *,
        updatable: frozenset[str],
        constraints: Mapping[str, str] | None = None,
        scope_column: str = "client_id",
        filterable: frozenset[str] = frozenset(),
    ) -> None:
        self.table = table
        self.columns = columns
        self.make = make
        self.updatable = updatable
        self.constraints = dict(constraints or {})
        self.scope_column = scope_column
        self.filterable = filterable

    def _scoped(self, param: int) -> str:
        return f"(${param}::uuid IS NULL OR {self.scope_column} = ${param})"

    async def _write(self, db: Executor, sql: str, *args: Any) -> Row | None:
        try:
            row = await db.fetchrow(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise translate_violation(exc, self.constraints) from exc
        return self.make(**row) if row else None

    async def insert(
        self, db: Executor, fixed: Mapping[str, Any], fields: Mapping[str, Any]
    ) -> Row:
        """Insert a row: ``fixed`` columns are set by code (owner, keys), ``fields`` by callers."""
        if unknown := set(fields) - self.updatable:
            raise ValueError(f"not settable: {sorted(unknown)}")
        values = {"id": new_id(), **fixed, **fields}
        placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        row = await self._write(
            db,
            f"INSERT INTO {self.table} ({', '.join(values)}) VALUES ({placeholders}) "
            f"RETURNING {self.columns}",
            *values.values(),
        )
        assert row is not None
        return row

    async def get(self, db: Executor, row_id: UUID, scope: UUID | None) -> Row | None:
        row = await db.fetchrow(
            f"SELECT {self.columns} FROM {self.table} WHERE id = $1 AND {self._scoped(2)}",
            row_id,
            scope,
        )
        return self.make(**row) if row else None

    async def list_page(
        self,
        db: Executor,
        scope: UUID | None,
        after: UUID | None,
        limit: int,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Row]:
        """Up to ``limit`` rows with ids after ``after``, oldest first (ids are UUIDv7)."""
        filters = filters or {}
        if unknown := set(filters) - self.filterable:
            raise ValueError(f"not filterable: {sorted(unknown)}")
        where = [self._scoped(1), "($2::uuid IS NULL OR id > $2)"]
        where += [f"{column} = ${4 + i}" for i, column in enumerate(filters)]
        rows = await db.fetch(
            f"SELECT {self.columns} FROM {self.table} WHERE {' AND '.join(where)} "
            "ORDER BY id LIMIT $3",
            scope,
            after,
            limit,
            *filters.values(),
        )
        return [self.make(**row) for row in rows]

    async def update(
        self, db: Executor, row_id: UUID, scope: UUID | None, changes: Mapping[str, Any]
    ) -> Row | None:
        assignments, args = set_clause(changes, self.updatable, 3)
        return await self._write(
            db,
            f"UPDATE {self.table} SET {assignments} WHERE id = $1 AND {self._scoped(2)} "
            f"RETURNING {self.columns}",
            row_id,
            scope,
            *args,
        )

    async def delete(self, db: Executor, row_id: UUID, scope: UUID | None) -> bool:
        status = await db.execute(
            f"DELETE FROM {self.table} WHERE id = $1 AND {self._scoped(2)}", row_id, scope
        )
        return bool(status == "DELETE 1")
