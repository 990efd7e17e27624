"""Which client a console page shows: the user's own; an operator user (no client) chooses one
on /clients, or opens a page with ``?client=<id>``, and the choice is kept in a cookie so every
link and form of the console stays with that client. Every query of the pages takes this id, so
a user of one client can never reach another client's data, whatever ids they type or whatever
the cookie says (it is read for operator users only)."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from callrouter.console.permissions import current_user

CLIENT_COOKIE = "callrouter_client"
CHOSEN = web.RequestKey("console_client_chosen", UUID)
"""An operator's choice made by this request's ``?client=``, for the middleware to keep."""


def client_of(request: web.Request) -> UUID:
    user = current_user(request)
    if user.client_id is not None:
        return user.client_id
    asked = request.query.get("client")
    try:
        client = UUID(asked if asked is not None else request.cookies.get(CLIENT_COOKIE, ""))
    except ValueError:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/clients") from None
        raise web.HTTPNotFound(reason="choose a client on /clients first") from None
    if asked is not None:
        request[CHOSEN] = client
    return client
