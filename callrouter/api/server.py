"""The aiohttp Application: middlewares, services and every endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from callrouter.api import (
    calls,
    clients,
    health,
    keys,
    numbers,
    openapi,
    pools,
    privacy,
    recordings,
    reports,
    sessions,
    trunks,
    visits,
    webhooks,
)
from callrouter.api.access_log import AccessLog
from callrouter.api.auth import AUTHENTICATOR, Authenticator
from callrouter.api.connections import ConnectionGuard
from callrouter.api.endpoints import Endpoint, register
from callrouter.api.forwarded import TrustedProxies
from callrouter.api.middleware import ApiMiddleware
from callrouter.api.scrape import Refresh, add_metrics_route
from callrouter.api.state import (
    BODY_TIMEOUT,
    CALL_CONTROL,
    DATABASE,
    DIALPLANS,
    PRIVACY,
    PUBLIC_RATE,
    READINESS,
    RECORDING_SPACE,
    RECORDINGS,
    SESSIONS,
    WEBHOOK_SENDER,
    CallControl,
    Readiness,
)
from callrouter.metrics import Metrics
from callrouter.privacy.rights import PrivacyRights
from callrouter.ratelimit import TokenBuckets
from callrouter.recording_space import RecordingSpace
from callrouter.recordings import Recordings
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.sessions import Sessions
from callrouter.webhooks import WebhookSender

ENDPOINTS: list[Endpoint] = [
    *health.ENDPOINTS,
    *openapi.ENDPOINTS,
    *clients.ENDPOINTS,
    *keys.ENDPOINTS,
    *numbers.ENDPOINTS,
    *pools.ENDPOINTS,
    *calls.ENDPOINTS,
    *sessions.ENDPOINTS,
    *visits.ENDPOINTS,
    *webhooks.ENDPOINTS,
    *reports.ENDPOINTS,
    *trunks.ENDPOINTS,
    *recordings.ENDPOINTS,
    *privacy.ENDPOINTS,
]


def _banner(server_header: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """aiohttp names itself and Python's version in Server; only the operator's value goes out
    (none by default), since a banner only helps scanners pick their exploit."""

    async def hide_banner(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)
        if server_header:
            response.headers["Server"] = server_header
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")

    return hide_banner


def build_api(
    database: asyncpg.Pool[asyncpg.Record],
    authenticator: Authenticator,
    *,
    max_body_bytes: int,
    endpoints: list[Endpoint] | None = None,
    visitor_sessions: Sessions | None = None,
    public_rate: TokenBuckets | None = None,
    webhook_sender: WebhookSender | None = None,
    privacy_rights: PrivacyRights | None = None,
    recordings_service: Recordings | None = None,
    call_control: CallControl | None = None,
    dialplans: DialplanLibrary | None = None,
    recording_space: RecordingSpace | None = None,
    connection_guard: ConnectionGuard | None = None,
    trusted_proxies: TrustedProxies | None = None,
    body_timeout: float = 30.0,
    metrics: Metrics | None = None,
    scrape: Refresh | None = None,
    readiness: Readiness | None = None,
    server_header: str = "",
) -> web.Application:
    """The API application with its services; ``endpoints`` defaults to all of them.

    :param visitor_sessions: the router's pools and sessions, for the swap script's routes.
    :param public_rate: per-address limit of the public (pool key) routes.
    :param privacy_rights: privacy requests and retention; without them (and the secret
        they hold) the privacy routes could only fail, so they are not served.
    :param recordings_service: the encrypted recordings (without the vault the recordings
        routes are not served).
    :param connection_guard: the HTTP connection limits and deadlines, told by its middleware
        when each request is being served (the site that serves the app must use it too).
    :param trusted_proxies: reverse proxies whose X-Forwarded-For names the client.
    :param body_timeout: seconds a request body may take once its headers are in.
    :param metrics: counts requests; with ``scrape`` (what to refresh before a scrape) it
        is also served at /metrics, outside the key auth.
    :param server_header: the HTTP Server header's value; empty sends none.
    """
    endpoints = ENDPOINTS if endpoints is None else endpoints
    if privacy_rights is None:
        endpoints = [e for e in endpoints if e.tag != privacy.TAG]
    if recordings_service is None:
        endpoints = [e for e in endpoints if e.tag != recordings.TAG]
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            ApiMiddleware(
                AccessLog(metrics),
                connection_guard,
                trusted_proxies if trusted_proxies and trusted_proxies.networks else None,
            ).middleware
        ],
    )
    app[DATABASE] = database
    app[BODY_TIMEOUT] = body_timeout
    app[PUBLIC_RATE] = public_rate if public_rate is not None else TokenBuckets(20.0, 100)
    if visitor_sessions is not None:
        app[SESSIONS] = visitor_sessions
    if webhook_sender is not None:
        app[WEBHOOK_SENDER] = webhook_sender
    if privacy_rights is not None:
        app[PRIVACY] = privacy_rights
    if recordings_service is not None:
        app[RECORDINGS] = recordings_service
    if call_control is not None:
        app[CALL_CONTROL] = call_control
    if dialplans is not None:
        app[DIALPLANS] = dialplans
    if recording_space is not None:
        app[RECORDING_SPACE] = recording_space
    if readiness is not None:
        app[READINESS] = readiness
    app[AUTHENTICATOR] = authenticator
    app[openapi.OPENAPI_DOCUMENT] = openapi.build_document(endpoints)
    app.on_response_prepare.append(_banner(server_header))
    register(app, endpoints)
    if metrics is not None and scrape is not None:
        add_metrics_route(app, metrics, scrape)
    return app
