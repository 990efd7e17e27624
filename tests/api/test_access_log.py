"""The access log's figures stay bounded whatever methods and paths clients send."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callrouter.api.access_log import METHODS, access_log_middleware
from callrouter.metrics import PREFIX, Metrics

_ODD_METHODS = ("PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "PURGE")
"""Methods both of aiohttp's parsers take (its C parser refuses names it does not know)."""


async def test_made_up_methods_and_paths_are_counted_under_a_few_labels() -> None:
    metrics = Metrics()
    app = web.Application(middlewares=[access_log_middleware(metrics)])

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/hello", hello)
    http: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    try:
        for n, method in enumerate(_ODD_METHODS):
            for path in ("/hello", f"/nowhere/{n}"):
                async with http.request(method, path) as reply:
                    assert reply.status in (404, 405)
        async with http.get("/hello") as reply:
            assert reply.status == 200
    finally:
        await http.close()
    labels = {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for family in metrics.registry.collect()
        if family.name == f"{PREFIX}_http_requests"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert labels == {
        ("OTHER", "unmatched", "404"),
        ("OTHER", "unmatched", "405"),
        ("GET", "/hello", "200"),
    }
    assert {method for method, _, _ in labels} <= METHODS | {"OTHER"}
