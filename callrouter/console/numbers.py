"""Numbers and pools: tracking numbers (add, edit, release) and pools (create, edit their lease
settings; their live utilisation, and the swap-script tag to paste, pinned by Subresource
Integrity).

Everyone with ``numbers.read`` sees the page; changing numbers needs ``numbers.write``,
creating and editing pools ``pools.write``. Every change goes into the audit log."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from multidict import MultiDictProxy

from callrouter.api.fields import destination, origin
from callrouter.api.pools import UPDATE as POOL_UPDATE
from callrouter.api.problems import Problem
from callrouter.api.state import SESSIONS
from callrouter.api.swap_script import SWAP_SCRIPT
from callrouter.console.audit import record
from callrouter.console.pages import Page, path_id, render, see_other
from callrouter.console.permissions import Permission, current_user, require
from callrouter.console.scope import client_of
from callrouter.console.state import CONSOLE
from callrouter.console.users import base_url
from callrouter.numbering import to_e164
from callrouter.routing.sessions import ATTRIBUTION_MODELS
from callrouter.store.database import StoreConflict
from callrouter.store.numbers import NUMBERS, Number
from callrouter.store.pools import POOLS, Pool, new_public_key
from callrouter.store.tenant_table import TenantTable

R = TypeVar("R")

NOTICES = {
    "added": "The number is added.",
    "saved": "The number is saved.",
    "released": "The number is released: calls to it are no longer ours.",
    "pool": "The pool is created.",
    "pool_saved": "The pool is saved.",
}

EXHAUSTION_POLICIES = ("reuse_oldest", "default_number")


class FormError(ValueError):
    """A form field is wrong: the page shows ``field: reason``."""


def _optional(form: MultiDictProxy[Any], name: str, limit: int = 200) -> str | None:
    value = str(form.get(name, "")).strip()
    if len(value) > limit:
        raise FormError(f"{name}: at most {limit} characters")
    return value or None


async def number_fields(form: MultiDictProxy[Any], pools: set[UUID]) -> dict[str, Any]:
    """The settable fields of a number from its form, checked like the API checks them."""
    fields: dict[str, Any] = {}
    target = _optional(form, "destination", 512)
    try:
        fields["destination"] = destination(target) if target else None
    except ValueError as exc:
        raise FormError(f"destination: {exc}") from None
    pool = _optional(form, "pool_id")
    try:
        fields["pool_id"] = UUID(pool) if pool else None
    except ValueError:
        raise FormError("pool_id: not an id") from None
    if fields["pool_id"] is not None and fields["pool_id"] not in pools:
        raise FormError("pool_id: not one of your pools")
    fields["record"] = form.get("record") == "on"
    for name in ("label", "source", "campaign"):
        fields[name] = _optional(form, name)
    return fields


async def _page(request: web.Request, error: str = "", status: int = 200) -> web.StreamResponse:
    database = request.app[CONSOLE].database
    client_id = client_of(request)
    numbers = await NUMBERS.list_page(database, client_id, None, 1000)
    pools = await POOLS.list_page(database, client_id, None, 100)
    sessions = request.app.get(SESSIONS)
    base = base_url(request)
    user = current_user(request)
    return await render(
        request,
        "numbers.html",
        {
            "numbers": numbers,
            "pools": [
                {
                    "pool": pool,
                    "stats": sessions.stats(pool.id) if sessions is not None else None,
                    "tag": f'<script src="{base}{SWAP_SCRIPT.path}" '
                    f'integrity="{SWAP_SCRIPT.integrity}" crossorigin="anonymous" '
                    f'data-pool="{pool.public_key}" async></script>',
                    "numbers": sum(1 for n in numbers if n.pool_id == pool.id),
                }
                for pool in pools
            ],
            "pool_names": {pool.id: pool.name for pool in pools},
            "may_edit": user.may(Permission.NUMBERS_WRITE),
            "may_pool": user.may(Permission.POOLS_WRITE),
            "error": error,
            "notice": NOTICES.get(request.query.get("done", ""), ""),
        },
        status=status,
    )


@require(Permission.NUMBERS_READ)
async def listing(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def _pool_ids(request: web.Request) -> set[UUID]:
    pools = await POOLS.list_page(request.app[CONSOLE].database, client_of(request), None, 100)
    return {pool.id for pool in pools}


@require(Permission.NUMBERS_WRITE)
async def add(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        e164 = to_e164(str(form.get("e164", "")).strip())
    except ValueError as exc:
        return await _page(request, f"e164: {exc}", 400)
    try:
        fields = await number_fields(form, await _pool_ids(request))
        number = await NUMBERS.insert(
            request.app[CONSOLE].database,
            {"client_id": client_of(request), "e164": e164},
            fields,
        )
    except FormError as exc:
        return await _page(request, str(exc), 400)
    except StoreConflict as exc:
        return await _page(request, f"e164: {exc}", 409)
    await record(request, "number.create", target=str(number.id), details={"e164": e164})
    return see_other("/numbers?done=added")


async def _owned(request: web.Request, table: TenantTable[R], key: str, what: str) -> R:
    """The row of ``table`` the page's path names, of this page's client; else a 404."""
    row_id = path_id(request, key, what)
    row = await table.get(request.app[CONSOLE].database, row_id, client_of(request))
    if row is None:
        raise web.HTTPNotFound(reason=f"no such {what}")
    return row


async def _number(request: web.Request) -> Number:
    return await _owned(request, NUMBERS, "number_id", "number")


@require(Permission.NUMBERS_WRITE)
async def edit(request: web.Request) -> web.StreamResponse:
    number = await _number(request)
    pools = await POOLS.list_page(request.app[CONSOLE].database, client_of(request), None, 100)
    return await render(request, "number.html", {"number": number, "pools": pools, "error": ""})


@require(Permission.NUMBERS_WRITE)
async def save(request: web.Request) -> web.StreamResponse:
    number = await _number(request)
    form = await request.post()
    try:
        fields = await number_fields(form, await _pool_ids(request))
    except FormError as exc:
        pools = await POOLS.list_page(request.app[CONSOLE].database, number.client_id, None, 100)
        return await render(
            request,
            "number.html",
            {"number": number, "pools": pools, "error": str(exc)},
            status=400,
        )
    await NUMBERS.update(request.app[CONSOLE].database, number.id, number.client_id, fields)
    await record(
        request, "number.update", target=str(number.id), details={"fields": sorted(fields)}
    )
    return see_other("/numbers?done=saved")


@require(Permission.NUMBERS_WRITE)
async def release(request: web.Request) -> web.StreamResponse:
    number = await _number(request)
    await NUMBERS.delete(request.app[CONSOLE].database, number.id, number.client_id)
    await record(request, "number.release", target=str(number.id), details={"e164": number.e164})
    return see_other("/numbers?done=released")


@require(Permission.POOLS_WRITE)
async def add_pool(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = str(form.get("name", "")).strip()
    if not 1 <= len(name) <= 200:
        return await _page(request, "name: between 1 and 200 characters", 400)
    try:
        origins = [origin(o.strip()) for o in str(form.get("origins", "")).split() if o.strip()]
    except ValueError as exc:
        return await _page(request, f"origins: {exc}", 400)
    try:
        targets = [to_e164(t.strip()) for t in str(form.get("targets", "")).split(",") if t.strip()]
    except ValueError as exc:
        return await _page(request, f"targets: {exc}", 400)
    try:
        pool = await POOLS.insert(
            request.app[CONSOLE].database,
            {"client_id": client_of(request), "public_key": new_public_key()},
            {"name": name, "allowed_origins": origins, "target_numbers": targets},
        )
    except StoreConflict as exc:
        return await _page(request, f"name: {exc}", 409)
    await record(request, "pool.create", target=str(pool.id), details={"name": name})
    return see_other("/numbers?done=pool")


async def _pool(request: web.Request) -> Pool:
    return await _owned(request, POOLS, "pool_id", "pool")


async def _pool_page(
    request: web.Request, pool: Pool, error: str = "", status: int = 200
) -> web.StreamResponse:
    return await render(
        request,
        "pool.html",
        {
            "pool": pool,
            "policies": EXHAUSTION_POLICIES,
            "models": ATTRIBUTION_MODELS,
            "error": error,
        },
        status=status,
    )


@require(Permission.POOLS_WRITE)
async def edit_pool(request: web.Request) -> web.StreamResponse:
    return await _pool_page(request, await _pool(request))


@require(Permission.POOLS_WRITE)
async def save_pool(request: web.Request) -> web.StreamResponse:
    """The form's fields checked by the API's own schema for a pool update, so the console
    and the API refuse the same values with the same words."""
    pool = await _pool(request)
    form = await request.post()
    data: dict[str, Any] = {
        "name": str(form.get("name", "")).strip(),
        "allowed_origins": str(form.get("origins", "")).split(),
        "target_numbers": [t.strip() for t in str(form.get("targets", "")).split(",") if t.strip()],
        "exhaustion_policy": str(form.get("exhaustion_policy", "")),
        "attribution_model": str(form.get("attribution_model", "")),
        "default_source": str(form.get("default_source", "")).strip(),
    }
    for name in ("lease_hold_seconds", "grace_seconds"):
        try:
            data[name] = int(str(form.get(name, "")).strip())
        except ValueError:
            return await _pool_page(request, pool, f"{name}: a whole number of seconds", 400)
    try:
        fields = POOL_UPDATE.parse(data, partial=True)
    except Problem as exc:
        return await _pool_page(request, pool, exc.detail, 400)
    try:
        await POOLS.update(request.app[CONSOLE].database, pool.id, pool.client_id, fields)
    except StoreConflict as exc:
        return await _pool_page(request, pool, f"name: {exc}", 409)
    await record(request, "pool.update", target=str(pool.id), details={"fields": sorted(fields)})
    return see_other("/numbers?done=pool_saved")


PAGES = [
    Page("/numbers", "numbers", get=listing, post=add),
    Page("/numbers/{number_id}", "number", get=edit, post=save),
    Page("/numbers/{number_id}/release", "number_release", post=release),
    Page("/pools", "pools", post=add_pool),
    Page("/pools/{pool_id}", "pool", get=edit_pool, post=save_pool),
]
