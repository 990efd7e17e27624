"""Logging in and out: password, then the TOTP or a recovery code when the user has 2FA;
and the one-time links that set a password.

A wrong password, an unknown email, a disabled user and a locked one all get the same page
after the same work (one argon2id verification), so the form tells nobody which emails exist.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from aiohttp import web

from callrouter.console import sessions
from callrouter.console.audit import record
from callrouter.console.links import token_hash
from callrouter.console.pages import Page, render, safe_next, see_other
from callrouter.console.passwords import WeakPassword, check_policy
from callrouter.console.second_factor import (
    hash_recovery_code,
    looks_like_recovery_code,
    matching_step,
)
from callrouter.console.state import CONSOLE
from callrouter.store import console_sessions, console_users
from callrouter.store.console_users import UserRow


def _refused_text(request: web.Request) -> str:
    config = request.app[CONSOLE].config
    minutes = max(1, round(config.lockout_seconds / 60))
    return (
        "Wrong email or password. After "
        f"{config.lockout_failures} wrong tries in a row an account is locked for "
        f"{minutes} minute{'s' if minutes != 1 else ''}."
    )


async def login_form(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next"))
    return await render(request, "login.html", {"next": next_path, "error": ""})


async def login_submit(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await request.post()
    email = str(form.get("email", "")).strip().lower()[:254]
    password = str(form.get("password", ""))
    next_path = safe_next(str(form.get("next", "")))
    wait = console.login_rate.take(request.remote or "unknown", console.clock())
    if wait > 0:
        response = await render(
            request,
            "login.html",
            {"next": next_path, "error": f"Too many attempts: try again in {wait:.0f} s."},
            status=429,
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    db = console.database
    now = sessions.now_of(console)
    user = await console_users.by_email(db, email) if email else None
    locked = user is not None and user.locked_until is not None and user.locked_until > now
    usable = user is not None and not locked and user.disabled_at is None
    stored = user.password_hash if usable and user is not None else None
    # Always one verification (against a dummy without a usable hash): the same work for
    # every answer.
    matched = await console.passwords.verify(stored, password)
    if user is None or not matched:
        if user is not None and not locked:
            await _failed(request, user)
        return await render(
            request, "login.html", {"next": next_path, "error": _refused_text(request)}, status=401
        )
    if user.totp_secret is not None:
        # The failure count goes on until the code is right too: else the password, known
        # to an attacker, would restart it between every nine guesses of the code.
        response = see_other("/login/code?next=" + quote(next_path, safe="/"))
        await sessions.start(request, response, user.id, pending=True)
        return response
    return await _logged_in(request, user, next_path, None)


async def _failed(request: web.Request, user: UserRow) -> None:
    console = request.app[CONSOLE]
    lock_until = sessions.now_of(console) + timedelta(seconds=console.config.lockout_seconds)
    if await console_users.login_failed(
        console.database, user.id, console.config.lockout_failures, lock_until
    ):
        await console_sessions.delete_for_user(request.app[CONSOLE].database, user.id)
        await record(
            request,
            "user.locked",
            target=user.email,
            client_id=user.client_id,
            actor="console",
            details={"until": lock_until.isoformat()},
        )


async def code_form(request: web.Request) -> web.StreamResponse:
    if request.get(sessions.SESSION) is None:
        return see_other("/login")
    next_path = safe_next(request.query.get("next"))
    return await render(request, "login_code.html", {"next": next_path, "error": ""})


async def code_submit(request: web.Request) -> web.StreamResponse:
    session = request.get(sessions.SESSION)
    if session is None or not session.pending:
        return see_other("/login")
    console = request.app[CONSOLE]
    db = console.database
    form = await request.post()
    code = str(form.get("code", "")).strip()[:64]
    next_path = safe_next(str(form.get("next", "")))
    user = session.user
    now = sessions.now_of(console)
    if (user.locked_until is not None and user.locked_until > now) or user.totp_secret is None:
        await sessions.end(request)
        response = await render(
            request, "login.html", {"next": next_path, "error": _refused_text(request)}, status=401
        )
        sessions.forget(response)
        return response
    if looks_like_recovery_code(code):
        accepted = await console_users.use_recovery_code(db, user.id, hash_recovery_code(code), now)
        how = "recovery code"
    else:
        step = matching_step(user.totp_secret, code, console.clock())
        accepted = step is not None and await console_users.use_totp_step(db, user.id, step)
        how = "authenticator code"
    if not accepted:
        await _failed(request, user)
        return await render(
            request,
            "login_code.html",
            {"next": next_path, "error": "That code is not right, or was used already."},
            status=401,
        )
    return await _logged_in(request, user, next_path, {"second_factor": how})


async def logout(request: web.Request) -> web.StreamResponse:
    await sessions.end(request)
    response = see_other("/login")
    sessions.forget(response)
    return response


async def link_form(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    token = request.match_info["token"]
    user = await console_users.link_user(
        console.database, token_hash(token), sessions.now_of(console)
    )
    if user is None:
        raise web.HTTPNotFound(reason="this link has expired or was used already")
    return await render(request, "link.html", {"invited": user, "error": ""})


async def link_submit(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    db = console.database
    token = request.match_info["token"]
    now = sessions.now_of(console)
    user = await console_users.link_user(db, token_hash(token), now)
    if user is None:
        raise web.HTTPNotFound(reason="this link has expired or was used already")
    form = await request.post()
    password = str(form.get("password", ""))
    error = ""
    try:
        check_policy(password, email=user.email)
    except WeakPassword as exc:
        error = f"Password: {exc}."
    if not error and password != str(form.get("confirm", "")):
        error = "The two passwords are not the same."
    if error:
        return await render(request, "link.html", {"invited": user, "error": error}, status=400)
    hashed = await console.passwords.hash(password)
    if await console_users.spend_link(db, token_hash(token), now) != user.id:
        raise web.HTTPNotFound(reason="this link has expired or was used already")
    await console_users.update(db, user.id, user.client_id, password_hash=hashed)
    await console_users.login_succeeded(db, user.id)
    await console_sessions.delete_for_user(request.app[CONSOLE].database, user.id)
    await record(
        request,
        "user.password_set",
        target=user.email,
        client_id=user.client_id,
        actor=f"user:{user.id}",
    )
    response = see_other("/")
    await sessions.start(request, response, user.id, pending=user.totp_secret is not None)
    if user.totp_secret is not None:
        response.headers["Location"] = "/login/code"
    return response


PAGES = [
    Page("/login", "login", get=login_form, post=login_submit, public=True),
    Page("/login/code", "login_code", get=code_form, post=code_submit, public=True),
    Page("/logout", "logout", post=logout, before_second_factor=True),
    Page("/invite/{token}", "link", get=link_form, post=link_submit, public=True),
]


async def _logged_in(
    request: web.Request, user: UserRow, next_path: str, details: dict[str, str] | None
) -> web.StreamResponse:
    """The user is in (password, then the code when they have 2FA): the failure count reset,
    a fresh full session, and the audit record."""
    await console_users.login_succeeded(request.app[CONSOLE].database, user.id)
    response = see_other(next_path)
    await sessions.start(request, response, user.id, pending=False)
    await record(
        request,
        "user.logged_in",
        target=user.email,
        client_id=user.client_id,
        actor=f"user:{user.id}",
        details=details,
    )
    return response
