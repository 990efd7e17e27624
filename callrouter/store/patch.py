"""Partial updates (PATCH) without an ORM: a SET clause from a whitelist of columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def set_clause(
    changes: Mapping[str, Any], columns: frozenset[str], first_param: int
) -> tuple[str, list[Any]]:
    """``"a = $3, b = $4, updated_at = now()"`` and its arguments, for the changed columns.

    Column names come from ``columns`` (constants in code), never from the request, so
    formatting them into SQL is safe.
    """
    unknown = set(changes) - columns
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    parts = [f"{name} = ${first_param + i}" for i, name in enumerate(changes)]
    parts.append("updated_at = now()")
    return ", ".join(parts), list(changes.values())
