"""The console's door in a real browser: a visitor is sent to the login page and back to where
they were going; the API beside it keeps its own routes and auth; every console answer carries
the strict Content-Security-Policy; a form posted without its CSRF token is refused."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from playwright.sync_api import Browser

from tests.console.conftest import DESKTOP, ConsoleServer, LoggedIn, axe_check, log_in, screenshot


def test_console_visitor_is_sent_to_login_and_back(
    console_server: ConsoleServer, browser: Browser
) -> None:
    owner = console_server.create_user("owner")
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        response = page.goto(console_server.url + "/users")
        assert response is not None
        assert re.search(r"/login\?next=/users$", page.url)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        axe_check(page)
        screenshot(page, "login")
        page.fill("#email", owner.email)
        page.fill("#password", owner.password)
        page.click("button[type=submit]")
        page.wait_for_url(console_server.url + "/users")
        assert page.inner_text("h1") == "Users"
        assert owner.email in page.inner_text("main table")
        # Landmarks and the logged-in user in the layout.
        assert page.locator("header").count() == 1
        assert page.locator("nav[aria-label=Main]").count() == 1
        assert page.locator("main#main").count() == 1
        assert page.get_attribute("a.skip", "href") == "#main"
        assert "Test Owner" in page.inner_text("header")
        cookie = next(c for c in context.cookies() if c["name"] == "callrouter_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        axe_check(page)
        screenshot(page, "users")
    finally:
        context.close()


def test_console_leaves_the_api_alone(console_server: ConsoleServer) -> None:
    """The API keeps problem+json, its key auth and no console cookies."""
    with urllib.request.urlopen(console_server.url + "/v1/health", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        assert "Set-Cookie" not in response.headers
    try:
        urllib.request.urlopen(console_server.url + "/v1/clients", timeout=10)
        raise AssertionError("the API answered without a key")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
        assert exc.headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(exc.read())["status"] == 401
    assert console_server.api("GET", "/v1/clients")["data"] is not None


def test_console_post_without_csrf_token_is_refused(
    console_server: ConsoleServer, logged_in: LoggedIn
) -> None:
    page, user = logged_in("listener")
    page.goto(console_server.url + "/account")
    token = page.get_attribute("input[name=csrf_token]", "value")
    assert token
    url = console_server.url + "/account/profile"
    form = {"name": "Renamed", "email": user.email}
    # The page's own cookies go with page.request: only the token is missing or wrong.
    missing = page.request.post(url, form=form, max_redirects=0)
    assert missing.status == 403
    assert "This form has expired" in missing.text()
    wrong = page.request.post(url, form={**form, "csrf_token": token[:-2] + "xx"}, max_redirects=0)
    assert wrong.status == 403
    header = page.request.post(url, form=form, headers={"X-CSRF-Token": "nope"}, max_redirects=0)
    assert header.status == 403
    assert page.request.get(console_server.url + "/account").text().count("Renamed") == 0
    # With the token (the form as the page sends it, or the htmx header) it goes through.
    ok = page.request.post(url, form={**form, "csrf_token": token}, max_redirects=0)
    assert ok.status == 303
    htmx = page.request.post(
        url,
        form={"name": "Renamed Again", "email": user.email},
        headers={"X-CSRF-Token": token},
        max_redirects=0,
    )
    assert htmx.status == 303
    page.goto(console_server.url + "/account")
    assert page.input_value("#name") == "Renamed Again"
    rows = console_server.fetch(
        "SELECT action, actor FROM console_audit WHERE target = $1 AND action = $2",
        user.email,
        "user.profile_changed",
    )
    assert [r["actor"] for r in rows] == [f"user:{user.id}"] * 2
    # A login form posted from elsewhere (no visitor cookie, no token) is refused too.
    page.context.clear_cookies()
    login = page.request.post(
        console_server.url + "/login",
        form={"email": user.email, "password": user.password},
        max_redirects=0,
    )
    assert login.status == 403


def test_console_logout_ends_the_session(console_server: ConsoleServer, browser: Browser) -> None:
    user = console_server.create_user("analyst")
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        log_in(page, console_server.url, user.email, user.password)
        stolen = next(c for c in context.cookies() if c["name"] == "callrouter_session")
        page.click("header button:has-text('Log out')")
        page.wait_for_url(re.compile(r"/login$"))
        # The old cookie, replayed, opens nothing: the session is gone server side.
        context.add_cookies([stolen])
        page.goto(console_server.url + "/account")
        assert re.search(r"/login\?next=/account$", page.url)
    finally:
        context.close()
