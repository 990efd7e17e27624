"""Hostile input against a real ``callrouter serve`` (issue 11, items 8 and 10).

Every reproduction of a 500 on bad input is replayed and must get a 4xx problem+json naming the
field; slow, idle, unknown and surplus connections on HTTP, SIP TCP and SIP TLS must be closed,
each waited for with a bounded loop and checked against the reason the server logs.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import world_traversable_tempdir
from tests.e2e.raw_http import exchange
from tests.e2e.serve import ServeProcess, message_of, record_of
from tests.transport.certificates import self_signed

CLOSE_WAIT = 30.0
"""Bound on waiting for the server to close a connection (its timeouts here are 1-2 s)."""


@dataclass
class Served:
    server: ServeProcess
    host: str
    http_port: int
    key: str

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> tuple[int, Any]:
        """One request on a fresh connection; (status, decoded JSON body or None)."""
        connection = http.client.HTTPConnection(
            self.host, self.http_port, timeout=30, source_address=(source, 0)
        )
        try:
            sent = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
            # http.client writes header values as Latin-1, so "\xff" goes out as the byte 0xFF.
            connection.request(method, path, body=body, headers={**sent, **(headers or {})})
            response = connection.getresponse()
            data = response.read()
            content_type = response.getheader("Content-Type", "")
            return response.status, json.loads(data) if "json" in content_type else None
        finally:
            connection.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    workdir = world_traversable_tempdir("callrouter-hostile-")
    cert, key = self_signed(workdir)
    server = ServeProcess(
        workdir / "data",
        "--sip-tls-port",
        "0",
        "--sip-tls-certificate",
        str(cert),
        "--sip-tls-private-key",
        str(key),
        # 127.0.0.1-3 are carriers; the test speaks as an unknown source from 127.0.0.9.
        "--sip-carriers",
        "127.0.0.0/30",
        "--sip-unknown-sources",
        "drop",
        "--sip-max-connections-per-source",
        "3",
        "--sip-idle-timeout",
        "2",
        "--sip-message-timeout",
        "1",
        "--sip-tls-handshake-timeout",
        "1",
        "--http-max-connections-per-source",
        "4",
        "--http-idle-timeout",
        "2",
        "--http-header-timeout",
        "1",
        "--http-body-timeout",
        "1",
        "--sip-listen-backlog",
        "700",
        "--http-listen-backlog",
        "600",
    )
    try:
        server.wait_ready()
        url = urlsplit(server.http_url)
        assert url.hostname is not None and url.port is not None
        operator = server.operator_key
        assert operator is not None
        yield Served(server, url.hostname, url.port, operator)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.settimeout(0.2)
    return sock


def bytes_before_close(port: int, source: str) -> bytes:
    """What a new connection from ``source`` receives before the server closes it (an abort
    at accept may reset the connection before ``connect`` even returns)."""
    try:
        sock = connect(port, source)
    except ConnectionResetError:
        return b""
    with sock:
        return received_until_closed(sock)


def received_until_closed(sock: socket.socket, trickle: bytes = b"") -> bytes:
    """Everything the server sent before it closed the connection, sending ``trickle`` now and
    then like a slowloris client; fails when the server keeps the connection past the bound."""
    received = b""
    deadline = time.monotonic() + CLOSE_WAIT
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return received
        if not data:
            return received
        received += data
    raise AssertionError(f"the server kept the connection open for {CLOSE_WAIT} s")


def options_over_tcp(sock: socket.socket, branch: str) -> bytes:
    """Send OPTIONS and return the response head (bounded wait)."""
    local = sock.getsockname()
    sock.sendall(
        (
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK-{branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{local[0]}>;tag=p1\r\n"
            "To: <sip:127.0.0.1>\r\n"
            f"Call-ID: {branch}@{local[0]}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    head = b""
    deadline = time.monotonic() + CLOSE_WAIT
    while b"\r\n\r\n" not in head and time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        assert data, "the server closed the connection instead of answering"
        head += data
    return head


# --- item 10: bad input gets a 4xx problem naming the field, never a 500 -----------------------


def assert_problem(reply: tuple[int, Any], status: int, field: str) -> None:
    code, body = reply
    assert code == status, reply
    assert body["status"] == status
    assert field in [e["field"] for e in body["errors"]], body


@pytest.mark.parametrize("path", ["/v1/clients", "/v1/numbers", "/v1/calls", "/v1/pools"])
def test_authorization_bytes_that_are_not_ascii_get_400(served: Served, path: str) -> None:
    reply = served.request("GET", path, headers={"Authorization": "Bearer crk_\xff\xfe"})
    assert_problem(reply, 400, "Authorization")


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/forms", "/v1/pools"])
def test_a_30000_deep_json_array_gets_400(served: Served, path: str) -> None:
    body = b"[" * 30_000 + b"]" * 30_000
    assert_problem(served.request("POST", path, body), 400, "body")


def test_a_lone_surrogate_in_a_string_field_gets_422(served: Served) -> None:
    assert_problem(served.request("POST", "/v1/clients", b'{"name": "\\ud800x"}'), 422, "name")
    session = b'{"pool_key": "pk_x", "page_url": "https://example.com/\\udfff"}'
    assert_problem(served.request("POST", "/v1/sessions", session), 422, "page_url")
    # A proper pair is one character, not a surrogate: accepted.
    status, client = served.request("POST", "/v1/clients", b'{"name": "Caf\\u00e9 \\ud83d\\ude00"}')
    assert status == 201 and client["name"] == "Caf\u00e9 \U0001f600"


def test_a_5000_digit_number_literal_gets_422(served: Served) -> None:
    status, client = served.request("POST", "/v1/clients", json.dumps({"name": "Big"}).encode())
    assert status == 201
    status, number = served.request(
        "POST",
        "/v1/numbers",
        json.dumps({"client_id": client["id"], "e164": "+441515550123"}).encode(),
    )
    assert status == 201
    huge = b"1" + b"0" * 4999
    reply = served.request("PATCH", f"/v1/numbers/{number['id']}", b'{"record": ' + huge + b"}")
    assert_problem(reply, 422, "record")
    reply = served.request("POST", "/v1/sessions", b'{"pool_key": ' + huge + b', "page_url": "x"}')
    assert_problem(reply, 422, "pool_key")
    # The number is untouched and the server still answers.
    status, fetched = served.request("GET", f"/v1/numbers/{number['id']}")
    assert status == 200 and fetched["e164"] == "+441515550123"


def test_a_malformed_request_is_one_log_line_not_a_traceback(served: Served) -> None:
    status, _ = served.request("GET", "/v1/health", headers={"X-Long": "a" * 10_000})
    assert status == 431
    served.server.wait_for(r"^http: refused a malformed request: Got more")
    refused = [
        record_of(line)
        for line in served.server.lines
        if "refused a malformed request" in message_of(line)
    ]
    assert [(r["level"], r["logger"]) for r in refused] == [("INFO", "callrouter.http")]
    assert not any("Traceback" in line for line in served.server.lines)


MARK = b"zq7mark"
"""In every request below, so a test sees whether the answer quotes the peer's bytes back."""
HEAD = b"Host: 127.0.0.1\r\nX-Mark: " + MARK + b"\r\n"
UNPARSABLE = [
    pytest.param(
        b"GET /v1/health HTTP/1.1\r\n" + HEAD + b"X-Long: " + MARK * 1300 + b"\r\n\r\n",
        431,
        "request line or header",
        id="header line over 8 KiB",
    ),
    pytest.param(
        b"GET /v1/health?" + MARK * 1300 + b" HTTP/1.1\r\n" + HEAD + b"\r\n",
        431,
        "request line or header",
        id="request line over 8 KiB",
    ),
    pytest.param(b"HELLO " + MARK + b"\r\n" + HEAD + b"\r\n", 400, "request line", id="method"),
    pytest.param(
        b"GET /v1/health HTTP/1.Z\r\n" + HEAD + b"\r\n", 400, "request line", id="version"
    ),
    pytest.param(
        b"GET http://[::1" + MARK + b" HTTP/1.1\r\n" + HEAD + b"\r\n",
        400,
        "request line",
        id="target",
    ),
    pytest.param(
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + MARK + b"\r\n\r\n",
        400,
        "request line",
        id="TLS on the HTTP port",
    ),
    pytest.param(
        b"POST /v1/clients HTTP/1.1\r\n" + HEAD + b"Content-Length: " + MARK + b"\r\n\r\n",
        400,
        "Content-Length",
        id="Content-Length not a number",
    ),
    pytest.param(
        b"POST /v1/clients HTTP/1.1\r\n" + HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n",
        400,
        "Content-Length",
        id="two Content-Lengths",
    ),
    pytest.param(
        b"POST /v1/clients HTTP/1.1\r\n"
        + HEAD
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "Transfer-Encoding",
        id="Content-Length and Transfer-Encoding",
    ),
    pytest.param(
        b"POST /v1/clients HTTP/1.1\r\n"
        + HEAD
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + MARK
        + b"\r\n",
        400,
        "body",
        id="chunk size",
    ),
    pytest.param(
        b"GET /v1/health HTTP/1.1\r\n"
        + HEAD
        + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        "headers",
        id="too many headers",
    ),
    pytest.param(
        b"GET /v1/health HTTP/1.1\r\n" + HEAD + b"Bad " + MARK + b": 1\r\n\r\n",
        400,
        "headers",
        id="header name",
    ),
    pytest.param(
        b"GET /v1/health HTTP/1.1\r\nX-Mark: " + MARK + b"\r\n\r\n", 400, "Host", id="no Host"
    ),
]


@pytest.mark.parametrize(("sent", "status", "part"), UNPARSABLE)
def test_a_request_aiohttp_cannot_parse_gets_a_problem_naming_the_part(
    served: Served, sent: bytes, status: int, part: str
) -> None:
    answer = exchange(served.http_port, sent)
    assert answer.status == status, answer
    problem = answer.problem()
    assert problem["status"] == status
    assert problem["detail"].startswith(f"{part}: "), problem
    assert [e["field"] for e in problem["errors"]] == [part]
    assert MARK.decode() not in answer.text
    assert served.request("GET", "/v1/health")[0] == 200  # and the server goes on


# --- item 8: slow, idle, unknown and surplus connections are closed ----------------------------


def test_slowloris_http_headers_are_cut_off(served: Served) -> None:
    sock = connect(served.http_port)
    with sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert received_until_closed(sock, trickle=b"X-Slow: 1\r\n") == b""
    served.server.wait_for(
        r"http: closing connection from 127\.0\.0\.1: waited 1 s for the request"
    )


def test_a_body_trickled_after_its_headers_gets_408(served: Served) -> None:
    with connect(served.http_port) as sock:
        sock.sendall(
            (
                "POST /v1/clients HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {served.key}\r\nContent-Type: application/json\r\n"
                'Content-Length: 100\r\n\r\n{"name": "'
            ).encode()
        )
        answer = received_until_closed(sock, trickle=b"x")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["errors"] == [{"field": "body", "reason": "sent too slowly"}]


def test_an_idle_http_connection_is_closed(served: Served) -> None:
    with connect(served.http_port) as sock:
        assert received_until_closed(sock) == b""
    served.server.wait_for(r"http: closing connection from 127\.0\.0\.1: waited 2 s for a request")


def test_http_connections_beyond_the_per_source_limit_are_closed_at_once(served: Served) -> None:
    held = [connect(served.http_port, "127.0.0.2") for _ in range(4)]
    try:
        # Closed at accept, without a byte.
        assert bytes_before_close(served.http_port, "127.0.0.2") == b""
        # Another address has its own allowance.
        assert served.request("GET", "/v1/health")[0] == 200
    finally:
        for sock in held:
            sock.close()
    # The places come back once the held connections are gone (the server sees the closes
    # soon, not at once: retry within the bound).
    deadline = time.monotonic() + CLOSE_WAIT
    while True:
        try:
            assert served.request("GET", "/v1/health", source="127.0.0.2")[0] == 200
            break
        except (http.client.RemoteDisconnected, ConnectionResetError):
            assert time.monotonic() < deadline, "the places of closed connections never came back"


def test_an_idle_sip_tcp_connection_is_closed(served: Served) -> None:
    with connect(served.server.sip_port("tcp")) as sock:
        assert received_until_closed(sock) == b""
    served.server.wait_for(r"sip: closing tcp connection from 127\.0\.0\.1:\d+: waited 2 s for a m")


def test_a_sip_message_trickled_over_tcp_is_cut_off(served: Served) -> None:
    with connect(served.server.sip_port("tcp")) as sock:
        sock.sendall(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n")
        assert received_until_closed(sock, trickle=b"X") == b""
    served.server.wait_for(r"waited 1 s for the rest of a message")


def test_a_tls_connection_that_never_says_hello_is_closed(served: Served) -> None:
    with connect(served.server.sip_port("tls")) as sock:
        assert received_until_closed(sock) == b""
    served.server.wait_for(
        r"sip: closing tls connection from 127\.0\.0\.1:\d+: waited 1 s for the TLS"
    )


def listen_backlog(port: int) -> int:
    """The backlog of the listening TCP socket on ``port`` (``ss`` shows it as Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[2])


def test_listen_backlogs_are_configurable(served: Served) -> None:
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert listen_backlog(served.server.sip_port("tcp")) == min(700, somaxconn)
    assert listen_backlog(served.server.sip_port("tls")) == min(700, somaxconn)
    assert listen_backlog(served.http_port) == min(600, somaxconn)


def test_an_unknown_source_cannot_hold_a_sip_tcp_connection(served: Served) -> None:
    port = served.server.sip_port("tcp")
    assert bytes_before_close(port, "127.0.0.9") == b""  # closed at accept, without a byte
    with connect(port, "127.0.0.1") as carrier:
        assert options_over_tcp(carrier, "known").startswith(b"SIP/2.0 200")


def test_sip_tcp_connections_beyond_the_per_source_limit_are_closed_at_once(
    served: Served,
) -> None:
    port = served.server.sip_port("tcp")
    held = [connect(port, "127.0.0.3") for _ in range(3)]
    try:
        assert bytes_before_close(port, "127.0.0.3") == b""
        assert options_over_tcp(held[0], "held").startswith(b"SIP/2.0 200")
        held.pop().close()
        # A freed place is given to the next connection (the server sees the close soon, not
        # at once: retry within the bound).
        deadline = time.monotonic() + CLOSE_WAIT
        while True:
            held.append(connect(port, "127.0.0.3"))
            try:
                if options_over_tcp(held[-1], f"again{len(held)}").startswith(b"SIP/2.0 200"):
                    break
            except (AssertionError, ConnectionResetError, BrokenPipeError):
                pass
            assert time.monotonic() < deadline, "the freed place was never given back"
            held.pop().close()
    finally:
        for sock in held:
            sock.close()
