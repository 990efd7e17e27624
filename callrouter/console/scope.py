"""Which client a console page shows: the user's own; an operator user (no client) names one
with ``?client=<id>``. Every query of the pages takes this id, so a user of one client can never
reach another client's data, whatever ids they type."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from callrouter.console.permissions import current_user


def client_of(request: web.Request) -> UUID:
    user = current_user(request)
    if user.client_id is not None:
        return user.client_id
    try:
        return UUID(request.query.get("client", ""))
    except ValueError:
        raise web.HTTPNotFound(
            reason="an operator user opens a client's pages with ?client=<client id>"
        ) from None
