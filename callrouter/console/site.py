"""Mount the console on the API's Application: templates, first-party static files, pages and
the middleware. The API's routes, middlewares and authentication are left as they are."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import aiohttp_jinja2
import asyncpg
import jinja2
from aiohttp import web

from callrouter.config import ConsoleConfig
from callrouter.console import (
    account,
    calls,
    clients,
    keys,
    login,
    numbers,
    overview,
    privacy,
    users,
    webhooks,
)
from callrouter.console.mail import Mailer
from callrouter.console.middleware import STATIC_ROUTE, console_middleware
from callrouter.console.pages import Page
from callrouter.console.passwords import Passwords
from callrouter.console.state import CONSOLE, Console
from callrouter.ratelimit import TokenBuckets

PAGES: list[Page] = [
    *login.PAGES,
    *overview.PAGES,
    *calls.PAGES,
    *clients.PAGES,
    *keys.PAGES,
    *numbers.PAGES,
    *privacy.PAGES,
    *webhooks.PAGES,
    *account.PAGES,
    *users.PAGES,
]


def static_dir() -> Path:
    return Path(str(resources.files("callrouter.console").joinpath("static")))


def install(
    app: web.Application,
    database: asyncpg.Pool[asyncpg.Record],
    config: ConsoleConfig,
    *,
    pages: list[Page] | None = None,
    clock: Callable[[], float] = time.time,
) -> Console:
    """Serve the console's pages under / on ``app`` (before it starts)."""
    pages = PAGES if pages is None else pages
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("callrouter.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    console = Console(
        database,
        config,
        Passwords(),
        TokenBuckets(config.login_rate_per_minute / 60.0, config.login_burst),
        mailer=Mailer.from_config(config),
        public_routes=frozenset(p.route_name for p in pages if p.public),
        enrolment_routes=frozenset(p.route_name for p in pages if p.before_second_factor),
        clock=clock,
    )
    app[CONSOLE] = console
    app.router.add_static("/static/", static_dir(), name=STATIC_ROUTE)
    for page in pages:
        if page.get is not None:
            app.router.add_get(page.path, page.get, name=page.route_name)
        if page.post is not None:
            app.router.add_post(page.path, page.post, name=page.route_name)
    app.middlewares.append(console_middleware)
    return console
