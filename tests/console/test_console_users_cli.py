"""`callrouter users` against a running server: an invitation mailed through a real SMTP
server (aiosmtpd on loopback) whose link works in the browser, the listing, a password link
that also lifts a lock, and disabling, which ends the user's sessions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser

from tests.console.conftest import DESKTOP, PASSWORD, ConsoleServer
from tests.e2e.sipp import free_port


class Inbox:
    """An aiosmtpd handler that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def users(server: ConsoleServer, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", "callrouter", "users", *args, "--data-dir", str(server.data)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_console_users_commands_invite_by_mail_list_reset_and_disable(
    console_server: ConsoleServer, browser: Browser, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    client = console_server.new_client("Mailed Ltd")
    out = users(
        console_server,
        "create",
        "--email",
        "mia@example.com",
        "--name",
        "Mia Manager",
        "--role",
        "manager",
        "--client",
        client,
        "--console-public-url",
        console_server.url,
        "--console-smtp-host",
        "127.0.0.1",
        "--console-smtp-port",
        str(port),
        "--console-smtp-security",
        "none",
        "--console-smtp-from",
        "console@example.net",
    )
    assert "invitation link mailed to mia@example.com" in out
    assert "/invite/" not in out  # mailed, so not printed too
    (mail,) = inbox.messages
    assert mail["To"] == "mia@example.com" and mail["From"] == "console@example.net"
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = re.search(re.escape(console_server.url) + r"/invite/\S+", body)
    assert link is not None

    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(link.group(0))
        page.fill("#password", PASSWORD)
        page.fill("#confirm", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(console_server.url + "/")
        assert "Mia Manager" in page.inner_text("header")

        listed = users(console_server, "list", "--client", client)
        assert re.search(r"mia@example\.com\s+manager\s+" + client + r"\s+active", listed)

        # Locked out by someone guessing: the operator's password link lifts the lock.
        console_server.fetch(
            "UPDATE console_users SET locked_until = now() + interval '1 hour' WHERE email = $1",
            "mia@example.com",
        )
        printed = users(console_server, "reset-password", "mia@example.com")
        reset = re.search(r"password link \(works once, for 72 h\): \S+/invite/(\S+)", printed)
        assert reset is not None
        (row,) = console_server.fetch(
            "SELECT locked_until FROM console_users WHERE email = 'mia@example.com'"
        )
        assert row["locked_until"] is None

        out = users(console_server, "disable", "mia@example.com")
        assert "disabled mia@example.com; ended 1 session(s)" in out
        page.goto(console_server.url + "/account")
        assert "/login" in page.url
        # A disabled user's right password gets the same answer as a wrong one.
        log_in_refused = context.new_page()
        log_in_refused.goto(console_server.url + "/login")
        log_in_refused.fill("#email", "mia@example.com")
        log_in_refused.fill("#password", PASSWORD)
        log_in_refused.click("main button[type=submit]")
        assert "Wrong email or password" in log_in_refused.inner_text("[role=alert]")
    finally:
        context.close()
    actions = [
        r["action"]
        for r in console_server.fetch(
            "SELECT action FROM console_audit WHERE target = 'mia@example.com' "
            "AND actor = 'cli' ORDER BY id"
        )
    ]
    assert actions == ["user.invited", "user.reset_link", "user.disabled"]
