"""Fixtures for the console's tests in a real browser: a running ``callrouter serve``, users
of any role logged in to a headless Chromium (the system's /usr/bin/chromium), an axe-core
accessibility check, screenshots at desktop and phone widths, and a check that a page fits
a 360 px phone.

    def test_console_calls_page(console_server, logged_in):
        page, user = logged_in("analyst")           # a new client's analyst, logged in
        page.goto(console_server.url + "/calls")
        axe_check(page)
        screenshot(page, "calls")                   # build/screenshots/calls-{desktop,phone}.png
        assert_fits_narrowest(page)

``console_server`` is shared by the session (each user gets a new client unless one is
given); ``browser`` is per module; ``console_server.api(...)`` calls the API with the operator
key and ``console_server.fetch(sql)`` reads the database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import pyotp
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from callrouter.console import accounts
from callrouter.console.passwords import Passwords
from callrouter.store import console_users
from callrouter.store.embedded import EmbeddedPostgres
from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
"""Where screenshots go (build/ is not committed)."""
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "a long test password 1"
T = TypeVar("T")


def axe_source() -> str:
    """axe-core's script, fetched from npm by tests/run into build/npm."""
    found = sorted((ROOT / "build" / "npm").glob("axe-core-*/axe.min.js"))
    assert found, "axe-core is missing: run the tests with tests/run, which fetches it"
    return found[-1].read_text()


def axe_check(page: Page) -> None:
    """Fail on any serious or critical accessibility violation axe-core finds on the page.

    The script is evaluated through the DevTools protocol, which the page's
    Content-Security-Policy (no inline script) does not apply to.
    """
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    violations = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')),
            }));
        }"""
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{page.url}: " + json.dumps(serious, indent=1)


def screenshot(page: Page, name: str) -> list[Path]:
    """Save the page at desktop (1280 px) and phone (390 px) width as PNGs under
    build/screenshots; the viewport is the desktop one afterwards."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        path = SCREENSHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        paths.append(path)
    return paths


NARROWEST = 360
"""The narrowest phone the console is made for."""


def assert_fits_narrowest(page: Page) -> None:
    """At 360 px the page needs no sideways scrolling (wide tables scroll in their own box);
    the viewport is the desktop one afterwards."""
    page.set_viewport_size({"width": NARROWEST, "height": 740})
    try:
        width = page.evaluate("document.documentElement.scrollWidth")
        wide = page.evaluate(
            """w => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > w)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)""",
            NARROWEST,
        )
        assert width <= NARROWEST, f"{page.url} is {width} px wide at {NARROWEST} px: {wide}"
    finally:
        page.set_viewport_size(DESKTOP)


def in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a loop of its own, in another thread (a sync test's
    thread may hold Playwright's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result(timeout=60)


@dataclass(frozen=True)
class Staff:
    """A console user made for a test."""

    id: str
    email: str
    password: str
    role: str
    client_id: str | None
    totp_secret: str | None = None

    def code(self, offset_steps: int = 0) -> str:
        """The TOTP code of now plus ``offset_steps`` 30-second steps."""
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).at(time.time() + 30 * offset_steps)


class ConsoleServer:
    """``callrouter serve`` without a media worker, its operator key and its database."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.data = workdir / "data"
        self.server = ServeProcess(self.data, "--media-workers", "0", *args).wait_ready()
        self.url = self.server.http_url
        key = self.server.operator_key
        assert key is not None
        self.key = key
        dsn = EmbeddedPostgres.running_dsn(self.data / "postgres")
        assert dsn is not None
        self.dsn = dsn

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The HTTP API with the operator key (JSON in, JSON out)."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def new_client(self, name: str = "Acme Dental") -> str:
        return str(self.api("POST", "/v1/clients", {"name": name})["id"])

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.dsn)
            try:
                return await connection.fetch(sql, *args)
            finally:
                await connection.close()

        return in_thread(run())

    def create_user(
        self,
        role: str,
        client_id: str | None = None,
        *,
        email: str | None = None,
        password: str = PASSWORD,
        totp: bool = False,
    ) -> Staff:
        """A user with a password (and a TOTP secret with ``totp``), as `users create
        --password-stdin` makes one. ``client_id`` None makes a new client (unless operator)."""
        if client_id is None and role != "operator":
            client_id = self.new_client()
        email = email or f"{role}-{secrets.token_hex(4)}@example.com"
        secret = pyotp.random_base32(32) if totp else None

        async def run() -> str:
            connection = await asyncpg.connect(self.dsn)
            try:
                await connection.set_type_codec(
                    "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )
                client = None if client_id is None else UUID(client_id)
                user, _ = await accounts.invite(
                    connection,
                    client_id=client,
                    email=email,
                    name=f"Test {role.capitalize()}",
                    role=role,
                    now=datetime.now(UTC),
                    hours=1,
                    base_url=self.url,
                    actor="cli",
                )
                await console_users.update(
                    connection,
                    user.id,
                    client,
                    password_hash=Passwords().hash_now(password),
                    **({"totp_secret": secret} if secret else {}),
                )
                return str(user.id)
            finally:
                await connection.close()

        user_id = in_thread(run())
        return Staff(user_id, email, password, role, client_id, secret)

    def stop(self) -> None:
        self.server.stop()


DEFAULT_ARGS = ("--console-login-burst", "500")
"""Every test logs in from 127.0.0.1: the per-address login limit must not bite here."""


@contextlib.contextmanager
def running_console(*args: str) -> Iterator[ConsoleServer]:
    """A server of its own, for a module that needs other settings (short expiries)::

    @pytest.fixture(scope="module")
    def console_server():
        with running_console(*DEFAULT_ARGS, "--console-session-idle-seconds", "3") as s:
            yield s
    """
    workdir = world_traversable_tempdir("callrouter-console-")
    server = ConsoleServer(workdir, *args)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def console_server() -> Iterator[ConsoleServer]:
    """One server for every console test (starting one takes seconds); each test makes its
    own client and users, so tests do not see each other's data."""
    with running_console(*DEFAULT_ARGS) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for a module's tests. Not for the session: Playwright's sync API holds an
    event loop on the main thread while it runs, and the async tests of other modules need it
    free."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(page: Page, base: str, email: str, password: str, code: str | None = None) -> None:
    """Fill the login form (and the code form when ``code`` is given) and wait to be in."""
    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("main button[type=submit]")
    if code is not None:
        page.wait_for_url(re.compile(r"/login/code"))
        page.fill("#code", code)
        page.click("main form:has(#code) button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


LoggedIn = Callable[..., tuple[Page, Staff]]


@pytest.fixture
def logged_in(console_server: ConsoleServer, browser: Browser) -> Iterator[LoggedIn]:
    """``logged_in(role, client_id=None)``: a new user of that role (of a new client unless
    one is given) and a page of a fresh browser context logged in as them, at desktop width."""
    contexts = []

    def make(role: str, client_id: str | None = None) -> tuple[Page, Staff]:
        user = console_server.create_user(role, client_id)
        context = browser.new_context(viewport=DESKTOP)
        contexts.append(context)
        page = context.new_page()
        log_in(page, console_server.url, user.email, user.password)
        return page, user

    yield make
    for context in contexts:
        context.close()
