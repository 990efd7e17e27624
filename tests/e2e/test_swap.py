"""The swap script in a real browser: headless Chromium loads a client's page from a local web
server with campaign parameters; the numbers on it are swapped to a leased one; a form is
recorded; a SIPp call to the leased number is attributed to that visit, also after a restart;
the client's webhook endpoint gets signed form.submitted and call.completed events."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, free_port, run_sipp, sipp_command

TARGET = "+441515550999"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Dental</title></head>
<body>
  <p id="national">Call us on 0151 555 0999 today.</p>
  <p id="international">From abroad: +44 151 555 0999</p>
  <p id="bracketed">Or (0151) 555-0999, any time.</p>
  <p id="other">Our fax is 0151 555 0123.</p>
  <a id="link" href="tel:+441515550999">Tap to call</a>
  <form id="contact" onsubmit="event.preventDefault()">
    <input name="email" value="ann@example.com"><input name="notes" value="private">
    <button type="submit">Send</button>
  </form>
  <script src="{router}/v1/swap.js" data-pool="{pool_key}" async></script>
</body></html>
"""


class Site:
    """The client's website on loopback: one page that embeds the swap script."""

    def __init__(self) -> None:
        self.html = b""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(site.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Receiver:
    """The client's webhook endpoint: every POST goes on a queue."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, count: int, secret: str) -> dict[str, dict[str, Any]]:
        """The next ``count`` deliveries by event name, each signature checked."""
        out = {}
        for _ in range(count):
            headers, body = self.received.get(timeout=60)
            parts = dict(p.split("=", 1) for p in headers["Callrouter-Signature"].split(","))
            mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
            assert hmac.compare_digest(parts["v1"], mac.hexdigest())
            event = json.loads(body)
            out[event["event"]] = event
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Router:
    ARGS = ("--http-webhooks-to-private-addresses", "true")

    def __init__(self, workdir: Path) -> None:
        self.data = workdir / "data"
        self.server = ServeProcess(self.data, *self.ARGS).wait_ready()
        self.key = self.server.operator_key

    def restart(self) -> None:
        self.server.stop()
        self.server = ServeProcess(self.data, *self.ARGS).wait_ready()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.server.http_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


@pytest.fixture
def world() -> Iterator[tuple[Router, Site, Receiver]]:
    workdir = world_traversable_tempdir("callrouter-swap-")
    site, receiver = Site(), Receiver()
    router = Router(workdir)
    try:
        yield router, site, receiver
    finally:
        router.server.stop()
        site.close()
        receiver.close()
        shutil.rmtree(workdir, ignore_errors=True)


def answering_pbx(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    command = sipp_command(SCENARIOS / "pbx_answer.xml", 0, tmp_path)
    command[1] = "-bind_local"
    command[command.index("-p") + 1] = str(port)
    command.remove("-timeout_error")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    return process, f"sip:desk@127.0.0.1:{port}"


def test_numbers_are_swapped_forms_recorded_and_the_call_attributed(
    world: tuple[Router, Site, Receiver], tmp_path: Path
) -> None:
    router, site, receiver = world
    client = router.api("POST", "/v1/clients", {"name": "Acme Dental"})
    hook = router.api(
        "POST",
        "/v1/webhooks",
        {
            "client_id": client["id"],
            "url": receiver.url,
            "events": ["form.submitted", "call.completed"],
        },
    )
    pool = router.api(
        "POST",
        "/v1/pools",
        {
            "client_id": client["id"],
            "name": "website",
            "allowed_origins": [site.origin],
            "target_numbers": [TARGET],
            "form_fields": ["email"],
        },
    )
    pbx, desk = answering_pbx(tmp_path)
    try:
        session_id = check_visit_and_call(
            router, site, client=client, pool=pool, desk=desk, tmp_path=tmp_path
        )
    finally:
        if pbx.poll() is None:
            pbx.kill()
        pbx.communicate(timeout=60)
    events = receiver.events(2, hook["secret"])
    form, call = events["form.submitted"]["data"], events["call.completed"]["data"]
    assert form["session_id"] == session_id and form["fields"] == {"email": "ann@example.com"}
    assert form["attribution"]["utm_source"] == "newsletter"
    assert call["session_id"] == session_id and call["disposition"] == "answered"
    assert call["attribution"]["utm_campaign"] == "autumn"
    # The pages that led to the call, without their query strings.
    assert [view["url"] for view in call["journey"]] == [site.origin + "/dentist"]


def check_visit_and_call(
    router: Router, site: Site, *, client: Any, pool: Any, desk: str, tmp_path: Path
) -> str:
    leased_e164 = "+441515550100"
    router.api(
        "POST",
        "/v1/numbers",
        {
            "client_id": client["id"],
            "e164": leased_e164,
            "pool_id": pool["id"],
            "destination": desk,
        },
    )
    router.server.wait_for(rf"sessions: pool {pool['id']} loaded with 1 number")
    site.html = PAGE.format(router=router.server.http_url, pool_key=pool["public_key"]).encode()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.goto(site.origin + "/dentist?utm_source=newsletter&utm_campaign=autumn")
            page.wait_for_function("window.callrouter && window.callrouter.session() !== null")
            assert page.inner_text("#national") == "Call us on 0151 555 0100 today."
            assert page.inner_text("#international") == "From abroad: +44 151 555 0100"
            assert page.inner_text("#bracketed") == "Or (0151) 555-0100, any time."
            assert page.inner_text("#other") == "Our fax is 0151 555 0123."
            assert page.get_attribute("#link", "href") == "tel:+441515550100"
            # Content that arrives later (a single-page app's next view) is swapped too.
            page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', "
                "'<p id=\"late\">Book on +44 (0)151 555 0999</p>')"
            )
            page.wait_for_function("!document.getElementById('late').innerText.includes('0999')")
            assert "555 0100" in page.inner_text("#late")
            session = page.evaluate("window.callrouter.session()")
            with page.expect_response("**/v1/forms") as form_reply:
                page.click("button[type=submit]")
            assert form_reply.value.status == 201
        finally:
            browser.close()

    # A restart between the visit and the call: the lease comes back from PostgreSQL.
    router.restart()
    assert "1 live lease(s) restored" in router.server.output
    result = run_sipp("uac", router.server.sip_port(), tmp_path, service=leased_e164)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    router.server.wait_event("call.ended", tracking_number=leased_e164, disposition="answered")
    (listed,) = router.api("GET", "/v1/calls?number=%2B441515550100")["data"]
    call = router.api("GET", f"/v1/calls/{listed['id']}")
    assert call["session_id"] == session["session_id"]
    assert call["attribution"]["utm_source"] == "newsletter"
    assert call["attribution"]["utm_campaign"] == "autumn"
    assert call["attribution"]["landing_page"] == site.origin + "/dentist"
    return str(session["session_id"])
