"""Write a console action to the audit log, naming who did it, for which client, from where."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from callrouter.console.permissions import USER
from callrouter.console.state import CONSOLE
from callrouter.store import console_audit


async def record(
    request: web.Request,
    action: str,
    *,
    target: str = "",
    details: dict[str, Any] | None = None,
    client_id: UUID | None = None,
    actor: str | None = None,
) -> None:
    """:param client_id: the client the action concerns; default: the acting user's.
    :param actor: who acted; default: the logged-in user."""
    user = request.get(USER)
    await console_audit.insert(
        request.app[CONSOLE].database,
        client_id=client_id if client_id is not None else (user.client_id if user else None),
        actor=actor or (user.actor if user else "visitor"),
        action=action,
        target=target,
        details=details,
        address=request.remote,
    )
