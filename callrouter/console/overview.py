"""The start page. The overview's figures and chart are built on this by the pages of issue
15's data part; until then it greets the user and points to the pages their role may open."""

from __future__ import annotations

from aiohttp import web

from callrouter.console.pages import Page, render


async def overview(request: web.Request) -> web.StreamResponse:
    return await render(request, "overview.html")


PAGES = [Page("/", "overview", get=overview)]
