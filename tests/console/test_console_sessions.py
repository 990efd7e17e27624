"""Console sessions end: after ``session_idle_seconds`` unused, and after
``session_absolute_seconds`` however busy; then the next page is the login form. The server of
this module runs with short expiries; the tests wait on the database's view of the session,
never on a sleep."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.console.conftest import DEFAULT_ARGS, ConsoleServer, LoggedIn, running_console

IDLE = 3
ABSOLUTE = 8


@pytest.fixture(scope="module")
def console_server() -> Iterator[ConsoleServer]:
    with running_console(
        *DEFAULT_ARGS,
        "--console-session-idle-seconds",
        str(IDLE),
        "--console-session-absolute-seconds",
        str(ABSOLUTE),
    ) as server:
        yield server


def _session(server: ConsoleServer, email: str) -> dict[str, bool]:
    (row,) = server.fetch(
        f"""SELECT now() - s.last_seen_at > interval '{IDLE} seconds' AS idle,
                   s.expires_at <= now() AS past
            FROM console_sessions s JOIN console_users u ON u.id = s.user_id
            WHERE u.email = $1""",
        email,
    )
    return dict(row)


def test_console_session_past_its_idle_expiry_is_sent_to_login(
    console_server: ConsoleServer, logged_in: LoggedIn
) -> None:
    page, user = logged_in("listener")
    page.goto(console_server.url + "/account")
    assert page.url == console_server.url + "/account"
    # Reading the table does not touch the session: wait until it has been idle too long.
    deadline = time.monotonic() + 60
    while not _session(console_server, user.email)["idle"]:
        assert time.monotonic() < deadline, "the session never went idle"
        time.sleep(0.2)
    page.goto(console_server.url + "/account")
    assert re.search(r"/login\?next=/account$", page.url)


def test_console_session_past_its_absolute_expiry_is_sent_to_login(
    console_server: ConsoleServer, logged_in: LoggedIn
) -> None:
    page, user = logged_in("manager")
    pages_seen = 0
    deadline = time.monotonic() + 90
    # Busy all along (a page at least every second): only the absolute expiry can end it.
    while True:
        page.goto(console_server.url + "/account")
        if "/login" in page.url:
            break
        pages_seen += 1
        assert time.monotonic() < deadline, "the session outlived its absolute expiry"
        time.sleep(0.3)
    assert pages_seen >= 2
    assert re.search(r"/login\?next=/account$", page.url)
    state = _session(console_server, user.email)
    assert state == {"idle": False, "past": True}
