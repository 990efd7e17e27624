"""The console's rules without a browser: the roles table is the issue's, callers' numbers are
masked, logins are rate limited per address whether or not the email exists, and the console
in the same Application leaves the API's answers alone (in-process, real PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pyotp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from callrouter.api.auth import Authenticator
from callrouter.api.server import build_api
from callrouter.config import ConsoleConfig
from callrouter.console import accounts
from callrouter.console.passwords import Passwords
from callrouter.console.permissions import ROLES, Permission, mask_caller_number
from callrouter.console.second_factor import matching_step
from callrouter.console.site import install
from callrouter.console.state import CONSOLE
from callrouter.ratelimit import TokenBuckets
from callrouter.store import clients, console_users
from callrouter.store.database import create_pool

P = Permission
NOW = 1_795_600_000
PASSWORD = "door password 12345"


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
        ("anonymous", "•••••••••"),
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


class CountingPasswords(Passwords):
    """Counts argon2 verifications (the work a login costs)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    def _matches(self, stored: str, password: str) -> bool:
        self.verified += 1
        return super()._matches(stored, password)


async def test_console_unknown_email_costs_one_verification_too(
    console_client: TestClient[Any, Any],
) -> None:
    counting = CountingPasswords()
    console_client.app[CONSOLE].passwords = counting
    assert (await _login(console_client, "nobody@example.com")).status == 401
    assert counting.verified == 1


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


async def _user(
    pool: asyncpg.Pool[asyncpg.Record], email: str, totp_secret: str | None = None
) -> None:
    client = await clients.CLIENTS.insert(pool, {}, {"name": "Door Ltd"})
    user, _ = await accounts.invite(
        pool,
        client_id=client.id,
        email=email,
        name="Door Person",
        role="manager",
        now=datetime.now(UTC),
        hours=1,
        base_url="http://console.test",
        actor="cli",
    )
    hashed = await Passwords().hash(PASSWORD)
    await console_users.update(pool, user.id, client.id, password_hash=hashed)
    if totp_secret is not None:
        await console_users.update(pool, user.id, client.id, totp_secret=totp_secret)


async def _logged_in(base: URL, email: str, jar: aiohttp.CookieJar) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(base_url=base, cookie_jar=jar)
    page = await (await session.get("/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    reply = await session.post(
        "/login",
        data={"csrf_token": token.group(1), "email": email, "password": PASSWORD},
        allow_redirects=False,
    )
    assert reply.status == 303
    return session


def _session_cookie(jar: aiohttp.CookieJar) -> str:
    return next(c.value for c in jar if c.key == "callrouter_session")


async def test_console_sessions_rotate_at_login_and_end_everywhere(database_dsn: str) -> None:
    pool = await create_pool(database_dsn)
    app = build_api(
        pool,
        Authenticator(pool, TokenBuckets(20, 100), TokenBuckets(1.0, 20)),
        max_body_bytes=65536,
    )
    install(app, pool, ConsoleConfig())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sessions: list[aiohttp.ClientSession] = []
    try:
        await _user(pool, "door@example.com")
        base = server.make_url("/")
        jar = aiohttp.CookieJar(unsafe=True)
        first = await _logged_in(base, "door@example.com", jar)
        sessions.append(first)
        old = _session_cookie(jar)
        # Logging in again (a planted or an old cookie) gives a new session; the old one ends.
        again = await _logged_in(base, "door@example.com", jar)
        sessions.append(again)
        assert _session_cookie(jar) != old
        assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 1
        other_jar = aiohttp.CookieJar(unsafe=True)
        other = await _logged_in(base, "door@example.com", other_jar)
        sessions.append(other)
        assert (await other.get("/account", allow_redirects=False)).status == 200
        page = await (await again.get("/account")).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        ended = await again.post(
            "/account/sessions/end", data={"csrf_token": token.group(1)}, allow_redirects=False
        )
        assert ended.status == 303 and ended.headers["Location"] == "/login"
        for client in (again, other):
            reply = await client.get("/account", allow_redirects=False)
            assert reply.status == 303 and reply.headers["Location"].startswith("/login")
        assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    finally:
        for client in sessions:
            await client.close()
        await server.close()
        await pool.close()


async def test_console_cookie_is_secure_behind_https(database_dsn: str) -> None:
    pool = await create_pool(database_dsn)
    app = build_api(
        pool,
        Authenticator(pool, TokenBuckets(20, 100), TokenBuckets(1.0, 20)),
        max_body_bytes=65536,
    )
    install(app, pool, ConsoleConfig(public_url="https://calls.example.com"))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        await _user(pool, "secure@example.com")
        first = await client.get("/login")
        visitor = first.headers["Set-Cookie"]
        assert visitor.startswith("callrouter_csrf=") and "Secure" in visitor
        token = visitor.split(";")[0].split("=", 1)[1]
        # Over plain HTTP the client keeps a Secure cookie to itself: send it by hand.
        reply = await client.post(
            "/login",
            data={"csrf_token": token, "email": "secure@example.com", "password": PASSWORD},
            headers={"Cookie": f"callrouter_csrf={token}"},
            allow_redirects=False,
        )
        assert reply.status == 303
        cookie = reply.headers["Set-Cookie"]
        assert cookie.startswith("callrouter_session=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        await client.close()
        await pool.close()


async def test_console_database_away_is_a_503_page(database_dsn: str) -> None:
    """PostgreSQL gone (connections killed, new ones refused): the console answers with its
    own 503 page and Retry-After, not a stack trace or the API's problem+json."""
    pool = await create_pool(database_dsn, min_size=1, max_size=2)
    app = build_api(
        pool,
        Authenticator(pool, TokenBuckets(20, 100), TokenBuckets(1.0, 20)),
        max_body_bytes=65536,
    )
    install(app, pool, ConsoleConfig())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    name = database_dsn.split("?", 1)[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(database_dsn.replace(f"/{name}?", "/postgres?", 1))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        reply = await client.get(
            "/account", cookies={"callrouter_session": "x" * 43}, allow_redirects=False
        )
        assert reply.status == 503
        assert reply.content_type == "text/html"
        assert reply.headers["Retry-After"] == "5"
        assert "database is unavailable" in await reply.text()
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await client.close()
        await pool.close()


async def test_console_the_password_does_not_restart_the_count_of_wrong_codes(
    database_dsn: str,
) -> None:
    pool = await create_pool(database_dsn)
    app = build_api(
        pool,
        Authenticator(pool, TokenBuckets(20, 100), TokenBuckets(1.0, 20)),
        max_body_bytes=65536,
    )
    install(app, pool, ConsoleConfig(login_burst=100))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    secret = pyotp.random_base32(32)
    wrong = "123456" if pyotp.TOTP(secret).now() != "123456" else "654321"

    async def password() -> str:
        page = await (await client.get("/login")).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        reply = await client.post(
            "/login",
            data={"csrf_token": token.group(1), "email": "codes@example.com", "password": PASSWORD},
        )
        assert reply.url.path == "/login/code"
        token = re.search(r'name="csrf_token" value="([^"]+)"', await reply.text())
        assert token is not None
        return token.group(1)

    async def code(token: str) -> int:
        reply = await client.post("/login/code", data={"csrf_token": token, "code": wrong})
        return reply.status

    try:
        await _user(pool, "codes@example.com", secret)
        token = await password()
        assert [await code(token) for _ in range(9)] == [401] * 9
        token = await password()  # the right password again...
        await code(token)  # ...and the tenth wrong code in a row locks
        locked = await pool.fetchval(
            "SELECT locked_until > now() FROM console_users WHERE email = 'codes@example.com'"
        )
        assert locked is True
    finally:
        await client.close()
        await pool.close()
