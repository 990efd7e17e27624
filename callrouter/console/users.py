"""Users and roles: an owner (or an operator user) invites people with a role, changes roles,
disables and enables users, sends password-reset links, and may make 2FA mandatory."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from callrouter.console import sessions
from callrouter.console.accounts import (
    AccountError,
    check_role,
    invite,
    mail_link,
    reset_link,
)
from callrouter.console.audit import record
from callrouter.console.pages import Page, path_id, render, see_other
from callrouter.console.permissions import CLIENT_ROLES, Permission, current_user, require
from callrouter.console.state import CONSOLE
from callrouter.store import console_audit, console_sessions, console_users
from callrouter.store.console_users import UserRow
from callrouter.store.database import StoreConflict

RECENT_CHANGES = 20
"""Audit entries the users page shows (the whole log is in the console_audit table)."""
NOTICES = {
    "role": "The role is changed.",
    "disabled": "The user is disabled and logged out everywhere.",
    "enabled": "The user is enabled.",
    "2fa": "The two-factor rule is saved.",
}


def base_url(request: web.Request) -> str:
    configured = request.app[CONSOLE].config.public_url
    return configured or f"{request.scheme}://{request.host}"


async def _context(request: web.Request, **extra: Any) -> dict[str, Any]:
    console = request.app[CONSOLE]
    user = current_user(request)
    people = await console_users.list_users(console.database, user.client_id)
    context: dict[str, Any] = {
        "users": people,
        "actors": {f"user:{p.id}": p.email for p in people},
        "changes": await console_audit.recent(console.database, user.client_id, RECENT_CHANGES),
        "roles": CLIENT_ROLES,
        "required": await console_users.requires_2fa(console.database, user.client_id),
        "notice": NOTICES.get(request.query.get("done", ""), ""),
        "error": "",
        "link": "",
        "link_for": "",
        "mailed": False,
    }
    context.update(extra)
    return context


@require(Permission.USERS_MANAGE)
async def listing(request: web.Request) -> web.StreamResponse:
    return await render(request, "users.html", await _context(request))


@require(Permission.USERS_MANAGE)
async def invite_user(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    form = await request.post()
    client_id = user.client_id
    try:
        if client_id is None:
            client_id = _client_field(str(form.get("client", "")))
        invited, url = await invite(
            console.database,
            client_id=client_id,
            email=str(form.get("email", "")),
            name=str(form.get("name", "")),
            role=str(form.get("role", "")) if client_id is not None else "operator",
            now=sessions.now_of(console),
            hours=console.config.link_hours,
            base_url=base_url(request),
            actor=user.actor,
            address=request.remote,
        )
    except AccountError as exc:
        return await _refuse(request, f"{exc.field.capitalize()}: {str(exc).split(': ', 1)[1]}.")
    except StoreConflict:
        return await _refuse(request, "Email: a user has it already.")
    mailed = await mail_link(console.mailer, invited, url, reset=False)
    return await render(
        request,
        "users.html",
        await _context(request, link="" if mailed else url, link_for=invited.email, mailed=mailed),
    )


def _client_field(text: str) -> UUID | None:
    """An operator user invites for the client named in the form (empty: another operator)."""
    if not text.strip():
        return None
    try:
        return UUID(text.strip())
    except ValueError:
        raise AccountError("client", "not a client id") from None


async def _refuse(request: web.Request, error: str) -> web.StreamResponse:
    return await render(request, "users.html", await _context(request, error=error), status=400)


async def _target(request: web.Request) -> UserRow:
    """The user of the path, within the acting user's client; never the acting user."""
    user = current_user(request)
    user_id = path_id(request, "user_id", "user")
    target = await console_users.get(request.app[CONSOLE].database, user_id, user.client_id)
    if target is None:
        raise web.HTTPNotFound(reason="no such user")
    if target.id == user.user_id:
        raise web.HTTPForbidden(reason="you cannot change your own role or disable yourself")
    return target


@require(Permission.USERS_MANAGE)
async def change_role(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    role = str((await request.post()).get("role", ""))
    try:
        check_role(role, target.client_id)
    except AccountError:
        return await _refuse(request, "Role: not one of the roles.")
    db = request.app[CONSOLE].database
    await console_users.update(db, target.id, target.client_id, role=role)
    await record(
        request,
        "user.role_changed",
        target=target.email,
        client_id=target.client_id,
        details={"from": target.role, "to": role},
    )
    return see_other("/users?done=role")


@require(Permission.USERS_MANAGE)
async def disable(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    console = request.app[CONSOLE]
    await console_users.update(
        console.database, target.id, target.client_id, disabled_at=sessions.now_of(console)
    )
    await console_sessions.delete_for_user(console.database, target.id)
    await record(request, "user.disabled", target=target.email, client_id=target.client_id)
    return see_other("/users?done=disabled")


@require(Permission.USERS_MANAGE)
async def enable(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    db = request.app[CONSOLE].database
    await console_users.update(db, target.id, target.client_id, disabled_at=None)
    await record(request, "user.enabled", target=target.email, client_id=target.client_id)
    return see_other("/users?done=enabled")


@require(Permission.USERS_MANAGE)
async def reset(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    console = request.app[CONSOLE]
    url = await reset_link(
        console.database,
        target,
        now=sessions.now_of(console),
        hours=console.config.link_hours,
        base_url=base_url(request),
        actor=current_user(request).actor,
        address=request.remote,
    )
    mailed = await mail_link(console.mailer, target, url, reset=True)
    return await render(
        request,
        "users.html",
        await _context(request, link="" if mailed else url, link_for=target.email, mailed=mailed),
    )


@require(Permission.USERS_MANAGE)
async def two_factor_rule(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if user.client_id is None:
        raise web.HTTPForbidden(reason="the two-factor rule is set per client, by its owners")
    required = (await request.post()).get("required") == "on"
    if required and not user.two_factor:
        # Else the owner would be sent to enrol on their very next page.
        return await _refuse(request, "Set up your own two-factor login first (My account).")
    await console_users.set_requires_2fa(request.app[CONSOLE].database, user.client_id, required)
    await record(request, "client.two_factor_rule", details={"required": required})
    return see_other("/users?done=2fa")


PAGES = [
    Page("/users", "users", get=listing, post=invite_user),
    Page("/users/two-factor", "users_two_factor", post=two_factor_rule),
    Page("/users/{user_id}/role", "user_role", post=change_role),
    Page("/users/{user_id}/disable", "user_disable", post=disable),
    Page("/users/{user_id}/enable", "user_enable", post=enable),
    Page("/users/{user_id}/reset", "user_reset", post=reset),
]
