"""My account: name and email, password, two-factor enrolment and recovery codes, and
logging out everywhere. Every change goes to the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from callrouter.console import second_factor, sessions
from callrouter.console.accounts import AccountError, check_name, normal_email
from callrouter.console.audit import record
from callrouter.console.pages import Page, render, see_other
from callrouter.console.passwords import WeakPassword, check_policy
from callrouter.console.permissions import current_user
from callrouter.console.state import CONSOLE
from callrouter.store import console_sessions, console_users
from callrouter.store.database import StoreConflict

NOTICES = {
    "profile": "Your details are saved.",
    "password": "Your password is changed; your other sessions are logged out.",
    "2fa-off": "Two-factor login is off.",
}


async def _account_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    console = request.app[CONSOLE]
    user = current_user(request)
    context: dict[str, Any] = {
        "notice": NOTICES.get(request.query.get("done", ""), ""),
        "error": "",
        "codes_left": await console_users.recovery_codes_left(console.database, user.user_id),
        "required": await console_users.requires_2fa(console.database, user.client_id),
    }
    context.update(extra)
    return context


async def show(request: web.Request) -> web.StreamResponse:
    return await render(request, "account.html", await _account_context(request))


async def _verify_password(request: web.Request, password: str) -> bool:
    console = request.app[CONSOLE]
    user = current_user(request)
    row = await console_users.get(console.database, user.user_id, user.client_id)
    return await console.passwords.verify(row.password_hash if row else None, password)


async def profile(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    form = await request.post()
    error = ""
    try:
        name = check_name(str(form.get("name", "")))
        email = normal_email(str(form.get("email", "")))
    except AccountError as exc:
        name, email = user.name, user.email
        error = f"{exc.field.capitalize()}: {str(exc).split(': ', 1)[1]}."
    if (
        not error
        and email != user.email
        and not await _verify_password(request, str(form.get("password", "")))
    ):
        error = "Current password: needed to change your email, and it is not right."
    if not error:
        try:
            await console_users.update(
                console.database, user.user_id, user.client_id, name=name, email=email
            )
        except StoreConflict:
            error = "Email: another user has it."
    if error:
        return await render(
            request, "account.html", await _account_context(request, error=error), status=400
        )
    changed = [
        f for f, old, new in (("name", user.name, name), ("email", user.email, email)) if old != new
    ]
    await record(request, "user.profile_changed", target=email, details={"fields": changed})
    return see_other("/account?done=profile")


async def password(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    form = await request.post()
    new = str(form.get("new_password", ""))
    error = ""
    if not await _verify_password(request, str(form.get("current_password", ""))):
        error = "Current password: not right."
    else:
        try:
            check_policy(new, email=user.email)
        except WeakPassword as exc:
            error = f"New password: {exc}."
        if not error and new != str(form.get("confirm", "")):
            error = "The two new passwords are not the same."
    if error:
        return await render(
            request, "account.html", await _account_context(request, error=error), status=400
        )
    await console_users.update(
        console.database,
        user.user_id,
        user.client_id,
        password_hash=await console.passwords.hash(new),
    )
    await console_sessions.delete_for_user(console.database, user.user_id)
    await record(request, "user.password_changed", target=user.email)
    response = see_other("/account?done=password")
    await sessions.start(request, response, user.user_id, pending=False)
    return response


async def end_everywhere(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    ended = await console_sessions.delete_for_user(request.app[CONSOLE].database, user.user_id)
    await record(request, "user.sessions_ended", target=user.email, details={"sessions": ended})
    response = see_other("/login")
    sessions.forget(response)
    return response


async def two_factor_form(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if user.two_factor:
        return await render(request, "two_factor.html", await _account_context(request))
    return await render(
        request, "two_factor.html", await _account_context(request, **_enrolment(user.email))
    )


def _enrolment(email: str, secret: str | None = None) -> dict[str, str]:
    """What the enrolment form shows: the key, its otpauth:// URI and that as a QR code."""
    secret = secret or second_factor.new_secret()
    uri = second_factor.provisioning_uri(secret, email)
    return {"secret": secret, "uri": uri, "qr": second_factor.qr_code(uri)}


async def two_factor_enable(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    if user.two_factor:
        return see_other("/account/two-factor")
    form = await request.post()
    secret = str(form.get("secret", ""))
    code = str(form.get("code", ""))
    valid_secret = len(secret) == 32 and secret.isalnum() and secret.isupper()
    step = second_factor.matching_step(secret, code, console.clock()) if valid_secret else None
    if step is None:
        return await render(
            request,
            "two_factor.html",
            await _account_context(
                request,
                **_enrolment(user.email, secret if valid_secret else None),
                error="Code: not right; check your phone's clock and type the current code.",
            ),
            status=400,
        )
    codes = second_factor.new_recovery_codes()
    async with console.database.acquire() as db, db.transaction():
        await console_users.update(db, user.user_id, user.client_id, totp_secret=secret)
        await console_users.use_totp_step(db, user.user_id, step)
        await console_users.replace_recovery_codes(db, user.user_id, codes.hashes)
    await record(request, "user.two_factor_enabled", target=user.email)
    return await render(request, "recovery_codes.html", {"codes": codes.codes})


async def recovery_codes(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    form = await request.post()
    if not user.two_factor or not await _verify_password(request, str(form.get("password", ""))):
        return await render(
            request,
            "two_factor.html",
            await _account_context(request, error="Password: not right."),
            status=400,
        )
    codes = second_factor.new_recovery_codes()
    await console_users.replace_recovery_codes(console.database, user.user_id, codes.hashes)
    await record(request, "user.recovery_codes_renewed", target=user.email)
    return await render(request, "recovery_codes.html", {"codes": codes.codes})


async def two_factor_off(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    form = await request.post()
    error = ""
    if await console_users.requires_2fa(console.database, user.client_id):
        error = "Your account's owner requires two-factor login."
    elif not await _verify_password(request, str(form.get("password", ""))):
        error = "Password: not right."
    if error:
        return await render(
            request, "two_factor.html", await _account_context(request, error=error), status=400
        )
    async with console.database.acquire() as db, db.transaction():
        await console_users.update(db, user.user_id, user.client_id, totp_secret=None)
        await console_users.replace_recovery_codes(db, user.user_id, [])
    await record(request, "user.two_factor_disabled", target=user.email)
    return see_other("/account?done=2fa-off")


PAGES = [
    Page("/account", "account", get=show),
    Page("/account/profile", "account_profile", post=profile),
    Page("/account/password", "account_password", post=password),
    Page("/account/sessions/end", "account_sessions_end", post=end_everywhere),
    Page(
        "/account/two-factor",
        "account_two_factor",
        get=two_factor_form,
        post=two_factor_enable,
        before_second_factor=True,
    ),
    Page("/account/two-factor/off", "account_two_factor_off", post=two_factor_off),
    Page("/account/recovery-codes", "account_recovery_codes", post=recovery_codes),
]
