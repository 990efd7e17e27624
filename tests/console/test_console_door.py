"""The console's rules without a browser: the roles table is the issue's, callers' numbers are
masked, logins are rate limited per address whether or not the email exists, and the console
in the same Application leaves the API's answers alone (in-process, real PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pyotp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callrouter.api.auth import Authenticator
from callrouter.api.server import build_api
from callrouter.config import ConsoleConfig
from callrouter.console.permissions import ROLES, Permission, mask_caller_number
from callrouter.console.second_factor import matching_step
from callrouter.console.site import install
from callrouter.ratelimit import TokenBuckets
from callrouter.store.database import create_pool

P = Permission
NOW = 1_795_600_000


def test_console_roles_are_the_issues() -> None:
    assert ROLES["owner"] == frozenset(Permission)
    assert ROLES["operator"] == frozenset(Permission)
    assert ROLES["manager"] == {
        P.NUMBERS_READ, P.NUMBERS_WRITE, P.POOLS_WRITE, P.REPORTS_READ, P.CALLS_READ,
        P.CALLS_CALLER_NUMBER, P.RECORDINGS_LISTEN,
    }  # fmt: skip
    assert ROLES["analyst"] == {P.REPORTS_READ, P.CALLS_READ, P.NUMBERS_READ}
    assert ROLES["listener"] == {P.CALLS_READ, P.CALLS_CALLER_NUMBER, P.RECORDINGS_LISTEN}
    for role in ("manager", "analyst", "listener"):
        assert P.USERS_MANAGE not in ROLES[role] and P.PRIVACY_MANAGE not in ROLES[role]


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+441515550123", "+44••••••••23"),
        ("+12125550199", "+1••••••••99"),
        ("+4930123456", "+49••••••56"),
        ("+123", "+•••"),
        ("", ""),
        (None, ""),
    ],
)
def test_console_masks_caller_numbers(number: str | None, masked: str) -> None:
    assert mask_caller_number(number) == masked


@pytest.fixture
async def console_client(database_dsn: str) -> AsyncIterator[TestClient[Any, Any]]:
    pool = await create_pool(database_dsn)
    try:
        app = build_api(
            pool,
            Authenticator(pool, TokenBuckets(20, 100), TokenBuckets(1.0, 20)),
            max_body_bytes=65536,
        )
        install(app, pool, ConsoleConfig(login_burst=3, login_rate_per_minute=1.0))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            yield client
        finally:
            await client.close()
    finally:
        await pool.close()


async def _login(client: TestClient[Any, Any], email: str) -> Any:
    page = await (await client.get("/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    return await client.post(
        "/login",
        data={"csrf_token": token.group(1), "email": email, "password": "x" * 12},
        allow_redirects=False,
    )


async def test_console_logins_are_rate_limited_per_address(
    console_client: TestClient[Any, Any],
) -> None:
    statuses = [(await _login(console_client, f"u{i}@example.com")).status for i in range(3)]
    assert statuses == [401, 401, 401]
    refused = await _login(console_client, "anyone@example.com")
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Too many attempts" in await refused.text()
    assert "default-src 'self'" in refused.headers["Content-Security-Policy"]


async def test_console_leaves_api_answers_as_problems(
    console_client: TestClient[Any, Any],
) -> None:
    unknown = await console_client.get("/v1/no-such-thing")
    assert unknown.status == 404
    assert unknown.content_type == "application/problem+json"
    assert "Content-Security-Policy" not in unknown.headers
    unauthorised = await console_client.get("/v1/numbers")
    assert unauthorised.status == 401
    assert unauthorised.content_type == "application/problem+json"
    # A visitor's POST to a console page is refused before any handler runs.
    posted = await console_client.post("/account/profile", data={"name": "x"})
    assert posted.status == 403
    assert posted.content_type == "text/html"
    css = await console_client.get("/static/console.css")
    assert css.status == 200 and css.content_type == "text/css"
    assert "frame-ancestors 'none'" in css.headers["Content-Security-Policy"]


def test_console_codes_are_ascii_digits_only() -> None:
    secret = pyotp.random_base32(32)
    code = pyotp.TOTP(secret).at(NOW)
    assert matching_step(secret, code, NOW) == NOW // 30
    assert matching_step(secret, f" {code[:3]} {code[3:]} ", NOW) == NOW // 30
    # Arabic-Indic digits are digits to str.isdigit(), and not a code.
    assert matching_step(secret, "١٢٣٤٥٦", NOW) is None
    assert matching_step(secret, code, NOW + 95) is None


async def test_console_hostile_csrf_token_is_refused_not_an_error(
    console_client: TestClient[Any, Any],
) -> None:
    await console_client.get("/login")
    for token in ("é" * 43, "\x00", "x" * 5000):
        reply = await console_client.post(
            "/login", data={"csrf_token": token, "email": "a@example.com", "password": "p"}
        )
        assert reply.status == 403, token
    header = await console_client.post("/login", headers={"X-CSRF-Token": "é"}, data={})
    assert header.status == 403
