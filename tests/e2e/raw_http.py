"""Bytes no HTTP client would send, written to a server's port; its answer read by
``http.client`` (a real parser, not a regex)."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    content_type: str
    text: str

    def problem(self) -> Any:
        assert self.content_type == "application/problem+json", self
        return json.loads(self.text)


def exchange(port: int, data: bytes, host: str = "127.0.0.1") -> Answer:
    """Send ``data`` on a new connection and read the answer (each wait bounded)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return Answer(response.status, response.getheader("Content-Type", ""), body.decode())
