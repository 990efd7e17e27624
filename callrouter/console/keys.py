"""API keys of the client: create (the secret is shown once, on the page that made it) and
revoke. Both go into the audit log; only owners (``keys.write``) see this page."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from callrouter.console.audit import record
from callrouter.console.pages import Page, render, see_other
from callrouter.console.permissions import Permission, require
from callrouter.console.scope import client_of
from callrouter.console.state import CONSOLE
from callrouter.store import api_keys
from callrouter.store.api_keys import API_KEYS


async def _page(request: web.Request, secret: str = "", error: str = "") -> web.StreamResponse:
    keys = await API_KEYS.list_page(request.app[CONSOLE].database, client_of(request), None, 200)
    return await render(
        request,
        "keys.html",
        {
            "keys": keys[::-1],
            "secret": secret,
            "error": error,
            "revoked": request.query.get("done") == "revoked",
        },
        status=400 if error else 200,
    )


@require(Permission.KEYS_WRITE)
async def listing(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@require(Permission.KEYS_WRITE)
async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = str(form.get("name", "")).strip()
    if not 1 <= len(name) <= 100:
        return await _page(request, error="name: between 1 and 100 characters")
    key, secret = await api_keys.create(request.app[CONSOLE].database, client_of(request), name)
    await record(request, "key.create", target=str(key.id), details={"name": name})
    # The secret is shown in this answer only: it is not stored, a reload does not show it.
    response = await _page(request, secret=secret)
    response.headers["Cache-Control"] = "no-store"
    return response


@require(Permission.KEYS_WRITE)
async def revoke(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        key_id = UUID(str(form.get("key_id", "")))
    except ValueError:
        raise web.HTTPBadRequest(reason="key_id: not an id") from None
    key = await api_keys.revoke(request.app[CONSOLE].database, key_id, client_of(request))
    if key is None:
        raise web.HTTPNotFound(reason="no such key")
    await record(request, "key.revoke", target=str(key.id))
    return see_other("/keys?done=revoked")


PAGES = [
    Page("/keys", "keys", get=listing, post=create),
    Page("/keys/revoke", "keys_revoke", post=revoke),
]
