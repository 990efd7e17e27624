"""The operator's list of clients: choosing one opens its pages (``scope.client_of`` keeps the
choice). Users of a client never see it: for them it does not exist."""

from __future__ import annotations

from aiohttp import web

from callrouter.console.pages import Page, render
from callrouter.console.permissions import current_user
from callrouter.console.scope import CLIENT_COOKIE
from callrouter.console.state import CONSOLE
from callrouter.store.clients import CLIENTS

SHOWN = 1000
"""Clients listed on the page (the oldest first); past that, ``?client=<id>`` opens one."""


async def listing(request: web.Request) -> web.StreamResponse:
    if current_user(request).client_id is not None:
        raise web.HTTPNotFound(reason="no such page")
    clients = await CLIENTS.list_page(request.app[CONSOLE].database, None, None, SHOWN)
    return await render(
        request,
        "clients.html",
        {"clients": clients, "current": request.cookies.get(CLIENT_COOKIE, "")},
    )


PAGES = [Page("/clients", "clients", get=listing)]
