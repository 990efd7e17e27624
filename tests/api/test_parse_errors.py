"""What aiohttp's parsers refuse, as the problem each refusal is answered with: the same
status and part from the C parser (llhttp, what serves) and the pure-Python one
(``AIOHTTP_NO_EXTENSIONS``), whose messages differ; and aiohttp's own answers after the parser,
as problem+json too. The answers of a live server are in ``tests/e2e/test_hostile_input.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParserC, HttpRequestParserPy

from callrouter.api.parse_errors import ProblemSite, parse_problem
from callrouter.api.problems import Problem

MARK = b"zq7mark"
HEAD = b"Host: h\r\nX-Mark: " + MARK + b"\r\n"
MAX_HEADERS = 128
CASES = [
    (
        b"GET / HTTP/1.1\r\n" + HEAD + b"X-Long: " + MARK * 1300 + b"\r\n\r\n",
        431,
        "request line or header",
    ),
    (b"GET /" + MARK * 1300 + b" HTTP/1.1\r\n" + HEAD + b"\r\n", 431, "request line or header"),
    (b"G@T / HTTP/1.1\r\n" + HEAD + b"\r\n", 400, "request line"),
    (b"GET / HTTP/1.Z\r\n" + HEAD + b"\r\n", 400, "request line"),
    (b"GET http://[::1" + MARK + b" HTTP/1.1\r\n" + HEAD + b"\r\n", 400, "request line"),
    (
        b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: " + MARK + b"\r\n\r\n",
        400,
        "Content-Length",
    ),
    (b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: -1\r\n\r\n", 400, "Content-Length"),
    (
        b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        "Content-Length",
    ),
    (
        b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: " + MARK + b"\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + MARK + b"\r\n",
        400,
        "body",
    ),
    (
        b"GET / HTTP/1.1\r\n" + HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        431,
        "headers",
    ),
    (b"GET / HTTP/1.1\r\n" + HEAD + b"Bad " + MARK + b": 1\r\n\r\n", 400, "headers"),
    (b"GET / HTTP/1.1\r\n" + HEAD + b"X: a\x01" + MARK + b"\r\n\r\n", 400, "headers"),
]


class _Protocol:
    """What a parser needs of its protocol to parse (it only reads bytes here)."""

    def __getattr__(self, _name: str) -> Any:
        raise AssertionError("the parser asked its protocol for something")


async def refusal(parser_class: Any, data: bytes) -> Problem:
    parser = parser_class(
        _Protocol(),
        asyncio.get_running_loop(),
        2**16,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=MAX_HEADERS,
    )
    with pytest.raises(HttpProcessingError) as refused:
        parser.feed_data(data)
    return parse_problem(refused.value, MAX_HEADERS)


@pytest.mark.parametrize("parser_class", [HttpRequestParserC, HttpRequestParserPy])
@pytest.mark.parametrize(("data", "status", "part"), CASES)
async def test_each_refusal_names_its_part_on_both_parsers(
    parser_class: Any, data: bytes, status: int, part: str
) -> None:
    problem = await refusal(parser_class, data)
    assert (problem.status, [e.field for e in problem.errors]) == (status, [part])
    assert problem.detail.startswith(f"{part}: ")
    assert MARK.decode() not in problem.detail  # the peer's bytes are never quoted back


async def test_a_handler_error_that_escapes_every_middleware_is_a_problem_too() -> None:
    """What aiohttp answers itself after the parser (an exception no middleware turned into a
    response: 500; a timeout: 504) leaves as problem+json as well, on a real socket."""

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def stuck(_request: web.Request) -> web.Response:
        raise TimeoutError

    app = web.Application()
    app.router.add_get("/broken", broken)
    app.router.add_get("/stuck", stuck)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = ProblemSite(runner, "127.0.0.1", 0, keepalive_timeout=5.0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with ClientSession(f"http://{host}:{port}") as http:
            for path, status in (("/broken", 500), ("/stuck", 504)):
                async with http.get(path) as response:
                    assert response.status == status
                    assert response.content_type == "application/problem+json"
                    problem = await response.json(content_type=None)
                    assert (problem["status"], problem["instance"]) == (status, path)
                    assert "a bug" not in problem["detail"]
    finally:
        await runner.cleanup()
