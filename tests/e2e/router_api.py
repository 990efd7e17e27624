"""A running ``callrouter serve`` seen through its API: clients, numbers and call records."""

from __future__ import annotations

import json
import time
import urllib.request
from itertools import count
from typing import Any

from tests.e2e.serve import ServeProcess

NUMBERS = count(1)


class Router:
    """A running serve with one client whose numbers the tests create."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.port = server.sip_port()
        self.client_id = self.api("POST", "/v1/clients", {"name": "Acme"})["id"]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.server.http_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.server.operator_key}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert "Server" not in response.headers  # no HTTP banner either
            return json.loads(response.read() or b"null")

    def number(self, destination: str, client_id: str | None = None) -> str:
        e164 = f"+4415166{next(NUMBERS):05d}"
        self.api(
            "POST",
            "/v1/numbers",
            {"client_id": client_id or self.client_id, "e164": e164, "destination": destination},
        )
        return e164

    def client(self, name: str) -> str:
        return str(self.api("POST", "/v1/clients", {"name": name})["id"])

    def ended_call(self, e164: str) -> Any:
        """The record of the one call to ``e164``, once serve has logged its end."""
        self.server.wait_event("call.ended", tracking_number=e164)
        path = "/v1/calls?number=" + e164.replace("+", "%2B")
        (listed,) = self.api("GET", path)["data"]
        return self.api("GET", f"/v1/calls/{listed['id']}")

    def wait_for_call(self, e164: str) -> None:
        """Until the call to ``e164`` has its record (it is set up and counted)."""
        deadline = time.monotonic() + 20
        path = "/v1/calls?number=" + e164.replace("+", "%2B")
        while not self.api("GET", path)["data"]:
            assert time.monotonic() < deadline, f"no call to {e164} started"
            time.sleep(0.05)  # poll interval, not a wait for the event
