"""People in the console, in a real browser: an owner invites a user, who sets a password,
turns 2FA on and logs in with a TOTP code (and once with a recovery code); ten wrong passwords
lock an account without telling anyone whether the email exists; the owner manages roles and
can make 2FA mandatory. Every page is checked by axe-core and photographed at two widths."""

from __future__ import annotations

import re
import time

import pyotp
from playwright.sync_api import Browser, Page

from tests.console.conftest import (
    DESKTOP,
    ConsoleServer,
    LoggedIn,
    assert_fits_narrowest,
    axe_check,
    log_in,
    screenshot,
)

NEW_PASSWORD = "purple elephants dance 42"


def test_console_owner_invites_user_who_sets_password_and_2fa_then_logs_in_with_totp(
    console_server: ConsoleServer, logged_in: LoggedIn, browser: Browser
) -> None:
    owner_page, owner = logged_in("owner")
    owner_page.goto(console_server.url + "/users")
    owner_page.fill("#invite-name", "Nia Listener")
    owner_page.fill("#invite-email", "Nia@Example.com")
    owner_page.select_option("#invite-role", "listener")
    owner_page.click("section:has(#invite-heading) button[type=submit]")
    link = owner_page.inner_text("#invitation-link").strip()
    assert re.fullmatch(re.escape(console_server.url) + r"/invite/[A-Za-z0-9_-]{43}", link)
    assert "nia@example.com" in owner_page.inner_text("main table")
    changes = owner_page.inner_text("section:has(#changes-heading) table")
    assert re.search(re.escape(owner.email) + r"\s+user\.invited\s+nia@example\.com", changes)
    axe_check(owner_page)
    screenshot(owner_page, "users-invited")
    assert_fits_narrowest(owner_page)

    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(link)
        assert "Nia Listener" in page.inner_text("main")
        axe_check(page)
        screenshot(page, "invitation")
        # The policy is checked server side too (the browser's minlength is bypassable).
        page.evaluate(
            "document.querySelectorAll('input').forEach(i => i.removeAttribute('minlength'))"
        )
        page.fill("#password", "short")
        page.fill("#confirm", "short")
        page.click("main button[type=submit]")
        assert "at least 10 characters" in page.inner_text("[role=alert]")
        page.fill("#password", NEW_PASSWORD)
        page.fill("#confirm", NEW_PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(console_server.url + "/")
        assert "Nia Listener" in page.inner_text("header")
        axe_check(page)
        screenshot(page, "start")
        # The link worked once.
        again = page.goto(link)
        assert again is not None and again.status == 404

        page.goto(console_server.url + "/account")
        axe_check(page)
        screenshot(page, "account")
        assert_fits_narrowest(page)
        page.click("a[href='/account/two-factor']")
        secret = page.inner_text("#secret").strip()
        assert page.get_attribute("#otpauth", "href") == pyotp.TOTP(secret).provisioning_uri(
            name="nia@example.com", issuer_name="callrouter"
        )
        # The QR code is an SVG image the strict CSP lets the browser draw.
        assert (page.get_attribute("#qr", "src") or "").startswith("data:image/svg+xml")
        page.wait_for_function("document.getElementById('qr').naturalWidth > 0")
        axe_check(page)
        screenshot(page, "two-factor-setup")
        assert_fits_narrowest(page)
        page.fill("#code", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
        page.click("main form button[type=submit]")
        assert "not right" in page.inner_text("[role=alert]")
        secret = page.inner_text("#secret").strip()
        page.fill("#code", pyotp.TOTP(secret).now())
        page.click("main form button[type=submit]")
        page.wait_for_selector("#recovery-codes")
        codes = page.locator("#recovery-codes li").all_inner_texts()
        assert len(codes) == 10 and len(set(codes)) == 10
        axe_check(page)
        screenshot(page, "recovery-codes")

        page.click("header button:has-text('Log out')")
        page.wait_for_url(re.compile(r"/login$"))
        # The password alone is not enough any more; the code of the step just used is
        # refused (replay), the next step's is taken.
        page.fill("#email", "nia@example.com")
        page.fill("#password", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/login/code"))
        axe_check(page)
        screenshot(page, "login-code")
        assert page.goto(console_server.url + "/account") is not None
        assert re.search(r"/login/code$", page.url)
        page.fill("#code", pyotp.TOTP(secret).at(0))
        page.click("main form:has(#code) button[type=submit]")
        assert "not right" in page.inner_text("[role=alert]")
        page.fill("#code", pyotp.TOTP(secret).at(time.time() + 30))
        page.click("main form:has(#code) button[type=submit]")
        page.wait_for_url(console_server.url + "/")
        assert "Nia Listener" in page.inner_text("header")
        page.goto(console_server.url + "/account/two-factor")
        assert "10 of 10 left" in page.inner_text("main")
        axe_check(page)
        screenshot(page, "two-factor-manage")

        # A recovery code logs in once.
        page.click("header button:has-text('Log out')")
        _password_then_code(page, console_server.url, codes[0])
        page.wait_for_url(console_server.url + "/")
        page.click("header button:has-text('Log out')")
        _password_then_code(page, console_server.url, codes[0])
        assert "not right" in page.inner_text("[role=alert]")
    finally:
        context.close()

    actions = [
        r["action"]
        for r in console_server.fetch(
            "SELECT action FROM console_audit WHERE target = 'nia@example.com' ORDER BY id"
        )
    ]
    assert actions[:4] == [
        "user.invited",
        "user.password_set",
        "user.two_factor_enabled",
        "user.logged_in",
    ]
    invited = console_server.fetch(
        "SELECT actor, client_id FROM console_audit WHERE action = 'user.invited' "
        "AND target = 'nia@example.com'"
    )
    assert invited[0]["actor"] == f"user:{owner.id}"
    assert str(invited[0]["client_id"]) == owner.client_id
    # Nothing secret is stored in the clear.
    (row,) = console_server.fetch(
        "SELECT password_hash FROM console_users WHERE email = 'nia@example.com'"
    )
    assert row["password_hash"].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    stored = console_server.fetch("SELECT code_hash FROM console_recovery_codes")
    assert all(codes[0].encode() not in r["code_hash"] for r in stored)


def _password_then_code(page: Page, base: str, code: str) -> None:
    page.goto(base + "/login")
    page.fill("#email", "nia@example.com")
    page.fill("#password", NEW_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/login/code"))
    page.fill("#code", code)
    page.click("main form:has(#code) button[type=submit]")
    page.wait_for_load_state()


def test_console_ten_wrong_passwords_lock_without_revealing_the_email(
    console_server: ConsoleServer, browser: Browser
) -> None:
    user = console_server.create_user("manager")
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(console_server.url + "/login")
        token = page.get_attribute("input[name=csrf_token]", "value")

        def attempt(email: str, password: str) -> tuple[int, str]:
            """The login form posted as the page would (its cookies, its token): the whole
            answer, status and every byte of the page."""
            reply = page.request.post(
                console_server.url + "/login",
                form={"csrf_token": token or "", "next": "/", "email": email, "password": password},
                max_redirects=0,
            )
            return reply.status, reply.text()

        unknown = attempt("nobody-at-all@example.com", "whatever it is")
        assert unknown[0] == 401 and "Wrong email or password" in unknown[1]
        for _ in range(10):
            assert attempt(user.email, "not the password") == unknown
        # Locked: now even the right password gets exactly the unknown email's answer.
        assert attempt(user.email, user.password) == unknown
        assert attempt("nobody-at-all@example.com", "whatever it is") == unknown
        # And so does the form in the browser.
        page.fill("#email", user.email)
        page.fill("#password", user.password)
        page.click("main button[type=submit]")
        assert "Wrong email or password" in page.inner_text("[role=alert]")
        assert page.url == console_server.url + "/login"
        axe_check(page)
        screenshot(page, "login-refused")
        (row,) = console_server.fetch(
            "SELECT locked_until > now() AS locked FROM console_users WHERE email = $1",
            user.email,
        )
        assert row["locked"]
        assert console_server.fetch(
            "SELECT 1 FROM console_audit WHERE action = 'user.locked' AND target = $1", user.email
        )
        # `users reset-password` is the way out before the lock ends (it unlocks).
    finally:
        context.close()


def test_console_owner_changes_roles_disables_and_requires_2fa(
    console_server: ConsoleServer, logged_in: LoggedIn, browser: Browser
) -> None:
    owner_page, without_2fa = logged_in("owner")
    owner_page.goto(console_server.url + "/users")
    owner_page.check("input[name=required]")
    owner_page.click("form[action='/users/two-factor'] button")
    assert "your own two-factor" in owner_page.inner_text("[role=alert]")
    owner = console_server.create_user("owner", without_2fa.client_id, totp=True)
    assert owner.client_id is not None
    log_in(owner_page, console_server.url, owner.email, owner.password, owner.code())
    analyst = console_server.create_user("analyst", owner.client_id)
    other = console_server.create_user("owner")  # another client's
    owner_page.goto(console_server.url + "/users")
    table = owner_page.inner_text("main table")
    assert analyst.email in table and other.email not in table

    # Another client's user is out of reach, even by id.
    refused = owner_page.request.post(
        f"{console_server.url}/users/{other.id}/disable",
        form={"csrf_token": owner_page.get_attribute("input[name=csrf_token]", "value") or ""},
        max_redirects=0,
    )
    assert refused.status == 404

    owner_page.select_option(f"#role-{analyst.id}", "manager")
    owner_page.click(f"form[action='/users/{analyst.id}/role'] button")
    owner_page.wait_for_url(re.compile(r"done=role"))
    assert owner_page.input_value(f"#role-{analyst.id}") == "manager"

    # The analyst (now a manager) logs in; the owner makes 2FA mandatory: the next page the
    # manager opens is the enrolment.
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        log_in(page, console_server.url, analyst.email, analyst.password)
        assert "manager" in page.inner_text("header")
        owner_page.check("input[name=required]")
        owner_page.click("form[action='/users/two-factor'] button")
        owner_page.wait_for_url(re.compile(r"done=2fa"))
        page.goto(console_server.url + "/account")
        assert page.url == console_server.url + "/account/two-factor"
        assert "requires two-factor" in page.inner_text("main")

        owner_page.click(f"form[action='/users/{analyst.id}/disable'] button")
        owner_page.wait_for_url(re.compile(r"done=disabled"))
        page.goto(console_server.url + "/account/two-factor")
        assert "/login" in page.url
        owner_page.click(f"form[action='/users/{analyst.id}/enable'] button")
        owner_page.wait_for_url(re.compile(r"done=enabled"))
        # A new password link for them, shown once to the owner (no SMTP here).
        owner_page.click(f"form[action='/users/{analyst.id}/reset'] button")
        reset_link = owner_page.inner_text("#invitation-link").strip()
        assert "/invite/" in reset_link
        # Nobody disables themselves (and so locks the client out), even by posting.
        token = owner_page.get_attribute("input[name=csrf_token]", "value") or ""
        self_disable = owner_page.request.post(
            f"{console_server.url}/users/{owner.id}/disable",
            form={"csrf_token": token},
            max_redirects=0,
        )
        assert self_disable.status == 403
        page.goto(reset_link)
        assert analyst.email in page.inner_text("main")
    finally:
        context.close()
    actions = {
        r["action"]
        for r in console_server.fetch(
            "SELECT action FROM console_audit WHERE client_id = $1::uuid", owner.client_id
        )
    }
    assert {
        "user.role_changed",
        "client.two_factor_rule",
        "user.disabled",
        "user.enabled",
        "user.reset_link",
    } <= actions


def test_console_error_pages_are_accessible(
    console_server: ConsoleServer, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("analyst")
    response = page.goto(console_server.url + "/users")
    assert response is not None and response.status == 403
    assert page.inner_text("h1") == "Not allowed"
    # The navigation shows only what the role may open.
    links = page.locator("nav a").all_inner_texts()
    assert "Users" not in links and "Calls" in links and "My account" in links
    axe_check(page)
    screenshot(page, "forbidden")
    missing = page.goto(console_server.url + "/invite/not-a-token")
    assert missing is not None and missing.status == 404
    axe_check(page)
