"""Webhooks of the client: register one (its signing secret shown once), remove one, fire a
test event, and each webhook's latest deliveries with their status. Changes are audited."""

from __future__ import annotations

import secrets
from uuid import UUID

from aiohttp import web

from callrouter.api.state import WEBHOOK_SENDER
from callrouter.api.webhooks import URL
from callrouter.console.audit import record
from callrouter.console.pages import Page, render, see_other
from callrouter.console.permissions import Permission, require
from callrouter.console.scope import client_of
from callrouter.console.state import CONSOLE
from callrouter.store import webhooks as store
from callrouter.store.webhooks import EVENTS, WEBHOOKS

NOTICES = {"removed": "The webhook is removed.", "fired": "A test event is queued."}


async def _page(request: web.Request, secret: str = "", error: str = "") -> web.StreamResponse:
    database = request.app[CONSOLE].database
    client_id = client_of(request)
    hooks = await WEBHOOKS.list_page(database, client_id, None, 100)
    return await render(
        request,
        "webhooks.html",
        {
            "hooks": [
                (hook, await store.recent_deliveries(database, client_id, hook.id, 10))
                for hook in hooks
            ],
            "events": EVENTS,
            "secret": secret,
            "error": error,
            "notice": NOTICES.get(request.query.get("done", ""), ""),
        },
        status=400 if error else 200,
    )


@require(Permission.WEBHOOKS_WRITE)
async def listing(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@require(Permission.WEBHOOKS_WRITE)
async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    url = str(form.get("url", "")).strip()
    events = [str(e) for e in form.getall("events", []) if str(e) in EVENTS]
    try:
        if URL.check is not None:
            URL.check(url)
        if len(url) > 2000:
            raise ValueError("at most 2000 characters")
    except ValueError as exc:
        return await _page(request, error=f"url: {exc}")
    if not events:
        return await _page(request, error="events: choose at least one")
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = await WEBHOOKS.insert(
        request.app[CONSOLE].database,
        {"client_id": client_of(request), "secret": secret},
        {"url": url, "events": events},
    )
    await record(request, "webhook.create", target=str(hook.id), details={"events": events})
    response = await _page(request, secret=secret)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _hook(request: web.Request) -> store.Webhook:
    form = await request.post()
    try:
        hook_id = UUID(str(form.get("webhook_id", "")))
    except ValueError:
        raise web.HTTPBadRequest(reason="webhook_id: not an id") from None
    hook = await WEBHOOKS.get(request.app[CONSOLE].database, hook_id, client_of(request))
    if hook is None:
        raise web.HTTPNotFound(reason="no such webhook")
    return hook


@require(Permission.WEBHOOKS_WRITE)
async def remove(request: web.Request) -> web.StreamResponse:
    hook = await _hook(request)
    await WEBHOOKS.delete(request.app[CONSOLE].database, hook.id, hook.client_id)
    await record(request, "webhook.delete", target=str(hook.id))
    return see_other("/webhooks?done=removed")


@require(Permission.WEBHOOKS_WRITE)
async def test_fire(request: web.Request) -> web.StreamResponse:
    hook = await _hook(request)
    sender = request.app.get(WEBHOOK_SENDER)
    if sender is None:
        raise web.HTTPServiceUnavailable(reason="this server sends no webhooks")
    await sender.emit_to(hook, "webhook.test", {"message": "a test from callrouter"})
    await record(request, "webhook.test", target=str(hook.id))
    return see_other("/webhooks?done=fired")


PAGES = [
    Page("/webhooks", "webhooks", get=listing, post=create),
    Page("/webhooks/remove", "webhooks_remove", post=remove),
    Page("/webhooks/test", "webhooks_test", post=test_fire),
]
