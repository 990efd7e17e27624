"""The composition root: builds every service from the configuration, on one event loop.

Services start in dependency order and stop in reverse (an ``AsyncExitStack``), so a failure
half-way through start-up still stops what had started, PostgreSQL included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web
from OpenSSL import SSL

from callrouter import __version__
from callrouter.api.auth import Authenticator
from callrouter.api.server import build_api
from callrouter.config import Config, ConfigError
from callrouter.instance_lock import DataDirectoryLock
from callrouter.media.control import MediaWorkerProcess, RecordingSettings
from callrouter.media.relay import PortAllocator
from callrouter.privacy.rights import PrivacyRights
from callrouter.ratelimit import TokenBuckets
from callrouter.recordings import Recordings
from callrouter.routing.anchoring import MediaAnchor
from callrouter.routing.b2bua import B2bua
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.directory import NumberDirectory
from callrouter.routing.front_door import FrontDoor
from callrouter.routing.sessions import Sessions
from callrouter.routing.trunks import CONFIG_TRUNK, Trunk, TrunkTable, parse_networks
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.transactions import Timers
from callrouter.store import api_keys, calls, numbers, trunks
from callrouter.store.availability import DatabaseAvailability
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import create_pool, ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from callrouter.store.heartbeat import Heartbeat
from callrouter.store.migrations import migrate
from callrouter.store.notifications import Notifications
from callrouter.store.spool import EventSpool
from callrouter.transport.listeners import Listening, open_listeners, tls_options
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.resolver import DnsLookup, Resolver, StaticRoutes
from callrouter.transport.service import SipService
from callrouter.vault import Vault, vault_paths
from callrouter.webhooks import WebhookSender

log = logging.getLogger(__name__)

Say = Callable[[str], None]
"""Where start-up facts for the operator go (the CLI prints them)."""

HEARTBEAT_SECONDS = 1.0
"""How often the heartbeat file is written: an interrupted call's end is known to this."""
NUMBERS_REFRESH_SECONDS = 10.0
"""How often every number is reloaded into the memory calls route from while the database
is away."""


@dataclass(frozen=True)
class RunningServer:
    """What a started server exposes to its caller (the CLI, the tests)."""

    dsn: str
    http_url: str
    sip: list[Listening]
    front_door: FrontDoor


@asynccontextmanager
async def database_dsn(
    config: Config,
    say: Say,
    *,
    owner: bool,
    availability: DatabaseAvailability | None = None,
) -> AsyncIterator[str]:
    """The DSN to use: the configured URL, or an embedded server under the data directory.

    :param owner: True for ``serve``, which holds the data directory lock. A short-lived
        command (``migrate``, ``keys``) that finds a server running attaches to its socket
        instead of starting a second PostgreSQL on the same files.
    :param availability: given, the embedded server is supervised (restarted when it dies,
        with backoff) and its deaths and returns are reported there.
    """
    if config.database.url:
        yield config.database.url
        return
    root = config.data_dir / "postgres"
    async with AsyncExitStack() as stack:
        if not owner:
            attached = EmbeddedPostgres.running_dsn(root)
            if attached is not None:
                yield attached
                return
            stack.enter_context(DataDirectoryLock(config.data_dir))
        server = EmbeddedPostgres(root)
        first_start = not server.initialised()
        server.start()
        stack.callback(server.stop)
        if await ensure_database(server.admin_dsn, DATABASE) or first_start:
            say(f"database: created an embedded PostgreSQL cluster in {root}")
        say(f"database: embedded PostgreSQL in {root} (Unix socket only, pid {server.pid})")
        if availability is not None:

            def changed(up: bool) -> None:
                availability.report(up, "embedded PostgreSQL exited")

            supervisor = asyncio.create_task(server.supervise(say, changed), name="pg-supervisor")
            stack.push_async_callback(_cancel, supervisor)
        yield server.dsn


async def migrate_database(dsn: str, say: Say) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for migration in await migrate(connection):
            say(f"database: applied migration {migration.version:04d} {migration.summary}")
    finally:
        await connection.close()


async def _first_operator_key(pool: asyncpg.Pool[asyncpg.Record], say: Say) -> None:
    """On the very first start there is no way in: make an operator key and show it once."""
    if await api_keys.count_operator_keys(pool) == 0:
        _, secret = await api_keys.create(pool, None, "created on first start")
        say(f"operator key (shown once, store it now): {secret}")


async def _start_http(app: web.Application, config: Config, stack: AsyncExitStack) -> str:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, config.http.host, config.http.port, reuse_address=True)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def _start_sip(
    config: Config,
    pool: asyncpg.Pool[asyncpg.Record],
    stack: AsyncExitStack,
    say: Say,
    *,
    listener: Notifications,
    visitor_sessions: Sessions,
    webhook_sender: WebhookSender,
    media_events: MediaEvents,
    privacy_rights: PrivacyRights,
    journal: CallJournal,
    directory: NumberDirectory,
) -> tuple[FrontDoor, list[Listening]]:
    sip = config.sip
    try:
        configured = Trunk(
            CONFIG_TRUNK,
            parse_networks(sip.carriers),
            country=sip.country,
            uri=sip.outbound_trunk,
        )
        static = StaticRoutes.parse(sip.static_routes)
        dns_servers = [_host_port(s) for s in sip.dns_servers.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"sip: {exc}") from None
    if sip.unknown_sources not in ("403", "drop"):
        raise ConfigError(f"sip.unknown_sources: {sip.unknown_sources!r} is not 403 or drop")
    tls = None
    if sip.tls_port is not None:
        if sip.tls_certificate is None or sip.tls_private_key is None:
            raise ConfigError("sip.tls_port needs sip.tls_certificate and sip.tls_private_key")
        try:
            tls = tls_options(sip.tls_certificate, sip.tls_private_key)
        except (OSError, SSL.Error) as exc:
            raise ConfigError(f"sip.tls_certificate / sip.tls_private_key: {exc}") from None

    trunk_table = TrunkTable(configured)
    await _load_trunks(pool, trunk_table, say)
    await listener.add_listener(TRUNKS_CHANNEL, _reload_trunks(pool, trunk_table, say))

    dialplans = DialplanLibrary(config.dialplans_dir, say)
    dialplans.refresh()
    stack.push_async_callback(_cancel, asyncio.create_task(_watch(dialplans, config)))

    reactor = asyncio_reactor(asyncio.get_running_loop())
    endpoint = SipEndpoint({}, Timers(sip.t1, sip.t2, sip.t4))
    service = SipService(endpoint, reactor)
    stack.callback(service.close)
    b2bua = B2bua(
        service,
        journal,
        dialplans,
        Resolver(DnsLookup(dns_servers or None), static),
        reactor,
        trunk_table,
        target_timeout=sip.target_timeout,
        announce=say,
        sessions=visitor_sessions,
        webhooks=webhook_sender,
        media=media_events.anchor,
        privacy=privacy_rights.suppressions.treatment,
    )
    media_events.b2bua = b2bua

    directory.load(await numbers.list_all(pool))
    stack.push_async_callback(
        _cancel,
        asyncio.create_task(
            directory.refresh(lambda: numbers.list_all(pool), NUMBERS_REFRESH_SECONDS)
        ),
    )
    front_door = FrontDoor(
        service.respond,
        directory.find,
        reactor.seconds,
        trunk_table,
        TokenBuckets(sip.rate_per_second, sip.rate_burst),
        calls=b2bua,
    )
    service.handler = front_door.handle
    if sip.unknown_sources == "drop":
        service.admit = front_door.admit
    listening = await open_listeners(
        reactor, service, sip.host, sip.port, stack, tls_port=sip.tls_port, tls=tls
    )
    for opened in listening:
        endpoint.advertised[opened.transport] = f"{opened.host}:{opened.port}"
    return front_door, listening


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not address:port: {text.strip()!r}")
    return host, int(port)


async def _watch(dialplans: DialplanLibrary, config: Config) -> None:
    """Pick up dialplan edits without a restart (a refused edit keeps the last good plan)."""
    while True:
        await asyncio.sleep(config.dialplans_poll_seconds)
        dialplans.refresh()


@dataclass(eq=False)
class MediaEvents:
    """Routes the media worker's events: finished recordings to the recordings service, dead
    media to the B2BUA (which hangs those calls up, saying why)."""

    recordings: Recordings
    worker: MediaWorkerProcess | None = None
    anchor: MediaAnchor | None = None
    b2bua: B2bua | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("recording_ready", "recording_failed"):
            self._spawn(self.recordings.worker_event(event))
        elif kind == "media_timeout" and self.b2bua is not None:
            self.b2bua.media_stopped(str(event.get("call")), "media timeout")
        elif kind == "worker_lost":
            lost = [str(call) for call in event.get("calls", [])]
            if self.anchor is not None:
                self.anchor.forget(lost)
            if self.b2bua is not None:
                for call in lost:
                    self.b2bua.media_stopped(call, "media worker lost")
            self._spawn(self.recover())

    def pause_recording(self, call_id: UUID, paused: bool) -> str | None:
        """The API's pause/resume (PCI), for the B2BUA's live calls."""
        if self.b2bua is None:
            return "this server routes no calls"
        return self.b2bua.pause_recording(call_id, paused)

    def media_failed(self, key: str, reason: str) -> None:
        if self.b2bua is not None:
            self.b2bua.media_failed(key, reason)

    async def recover(self) -> int:
        """Finalise what a dead worker was recording (after every worker start)."""
        if self.worker is None:
            return 0
        reply = await self.worker.command("recover")
        return await self.recordings.recovered(list(reply.get("recordings", [])))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media: %s", task.exception())


@dataclass(eq=False)
class Readiness:
    """What /v1/ready checks: the database answers now, the media worker (when one is
    configured) is running, and SIP takes calls (not draining for a shutdown)."""

    availability: DatabaseAvailability
    probe: Callable[[], Awaitable[object]]
    media: MediaEvents
    front_door: FrontDoor | None = None

    async def check(self) -> dict[str, bool]:
        parts = {"database": await self.availability.check(self.probe)}
        if self.media.worker is not None:
            parts["media"] = self.media.worker.running
        if self.front_door is not None:
            parts["sip"] = not self.front_door.draining
        return parts


async def _start_media(
    config: Config, stack: AsyncExitStack, recordings_service: Recordings, say: Say
) -> MediaEvents:
    """The media worker (when configured) and the anchor the B2BUA uses to reach it."""
    events = MediaEvents(recordings_service)
    media = config.media
    if media.workers < 1:
        say("media: no worker (media.workers = 0): calls are not recorded")
        return events
    if media.format not in ("flac", "wav"):
        raise ConfigError(f"media.format: {media.format!r} is not flac or wav")
    first, _, last = media.ports.partition("-")
    if not (first.isdigit() and last.isdigit() and 1024 <= int(first) < int(last) <= 65535):
        raise ConfigError(f"media.ports: {media.ports!r} is not FIRST-LAST within 1024-65535")
    run = config.data_dir / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_ring, keys_dir = vault_paths(config)
    worker = MediaWorkerProcess(
        run / "media-0.sock",
        media.host,
        media.ports,
        media_timeout=media.timeout,
        on_event=events,
        recording=RecordingSettings(
            config.recordings_dir.resolve(),
            key_ring.resolve(),
            keys_dir.resolve(),
            config.vault.segment_bytes,
            media.format,
        ),
    )
    await worker.start()
    stack.push_async_callback(worker.stop)
    events.worker = worker
    events.anchor = MediaAnchor(
        worker, media.host, PortAllocator(int(first), int(last)), events.media_failed
    )
    if recovered := await events.recover():
        say(f"media: finalised {recovered} recording(s) interrupted by the last run")
    say(f"media: worker pid {worker.pid}, RTP on {media.host}:{media.ports}")
    return events


POOL_CHANNEL = "pool_changed"
TRUNKS_CHANNEL = "trunks_changed"
DISPOSAL_CHANNEL = "recording_disposed"


def _dispose(recordings_service: Recordings) -> Callable[..., None]:
    """A LISTEN callback: a recording row was deleted somewhere (migration 0007's trigger);
    shred its key and file now rather than at the next start."""
    tasks: set[asyncio.Task[int]] = set()

    def on_change(_connection: object, _pid: int, _channel: str, _payload: str) -> None:
        task = asyncio.get_running_loop().create_task(recordings_service.dispose_pending())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_change


async def _load_trunks(pool: asyncpg.Pool[asyncpg.Record], table: TrunkTable, say: Say) -> None:
    table.replace([Trunk.from_row(row) for row in await trunks.list_all(pool)])
    say(f"sip: trunks in service: {', '.join(t.name for t in table.trunks)}")


def _reload_trunks(
    pool: asyncpg.Pool[asyncpg.Record], table: TrunkTable, say: Say
) -> Callable[..., None]:
    """A LISTEN callback: the trunks table changed (migration 0006's trigger)."""
    tasks: set[asyncio.Task[None]] = set()

    def on_change(_connection: object, _pid: int, _channel: str, _payload: str) -> None:
        task = asyncio.get_running_loop().create_task(_load_trunks(pool, table, say))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_change


def _reload_pool(visitor_sessions: Sessions) -> Callable[..., None]:
    """A LISTEN callback: reload the pool PostgreSQL says changed (migration 0003's triggers)."""
    tasks: set[asyncio.Task[None]] = set()

    def on_change(_connection: object, _pid: int, _channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(visitor_sessions.reload(UUID(payload)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_change


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@asynccontextmanager
async def running(config: Config, say: Say) -> AsyncIterator[RunningServer]:
    """Start everything ``callrouter serve`` runs; stop it all on exit."""
    async with AsyncExitStack() as stack:
        stack.enter_context(DataDirectoryLock(config.data_dir))
        availability = DatabaseAvailability()
        dsn = await stack.enter_async_context(
            database_dsn(config, say, owner=True, availability=availability)
        )
        await migrate_database(dsn, say)
        pool = await create_pool(
            dsn, min_size=config.database.pool_min, max_size=config.database.pool_max
        )
        stack.push_async_callback(pool.close)
        await _first_operator_key(pool, say)
        stack.push_async_callback(
            _cancel, asyncio.create_task(availability.watch(lambda: pool.fetchval("SELECT 1")))
        )
        # Call events of the last run that the database does not have yet (it was away, or we
        # were killed) are written first; only then are calls still open known interrupted.
        spool = EventSpool(config.data_dir / "spool", max_bytes=config.database.spool_max_bytes)
        journal = await stack.enter_async_context(
            CallJournal(pool, spool, availability=availability)
        )
        await journal.flushed()
        if journal.replayed:
            say(f"calls: wrote {journal.replayed} call event(s) spooled by the last run")
        heartbeat = Heartbeat(config.data_dir / "heartbeat")
        if interrupted := await calls.close_interrupted(pool, heartbeat.last()):
            say(f"calls: closed {interrupted} call(s) left open by the last run as interrupted")
        stack.push_async_callback(
            _cancel, asyncio.create_task(heartbeat.run(HEARTBEAT_SECONDS), name="heartbeat")
        )

        authenticator = Authenticator(
            pool,
            TokenBuckets(config.http.rate_per_second, config.http.rate_burst),
            TokenBuckets(rate=1.0, burst=config.http.auth_failure_burst),
        )
        listener = Notifications(dsn)
        await listener.connect()
        stack.push_async_callback(listener.close)
        stack.push_async_callback(_cancel, asyncio.create_task(listener.run(say)))
        await listener.add_listener(api_keys.REVOKED_CHANNEL, authenticator.on_revoked)

        # Pools and live leases are in memory before the API or SIP serves anything.
        visitor_sessions = Sessions(pool, time.time, say)
        restored = await visitor_sessions.load()
        say(f"sessions: {len(visitor_sessions.pools)} pool(s), {restored} live lease(s) restored")
        stack.push_async_callback(_cancel, asyncio.create_task(visitor_sessions.run()))
        await listener.add_listener(POOL_CHANNEL, _reload_pool(visitor_sessions))

        webhook_sender = WebhookSender(
            pool, allow_private=config.http.webhooks_to_private_addresses
        )
        stack.push_async_callback(_cancel, asyncio.create_task(webhook_sender.run()))

        vault = Vault.from_config(config)
        recordings_service = Recordings(
            pool, vault, config.recordings_dir, webhooks=webhook_sender, announce=say
        )
        if shredded := await recordings_service.dispose_pending():
            say(f"recordings: shredded {shredded} recording(s) deleted before the last stop")
        await listener.add_listener(DISPOSAL_CHANNEL, _dispose(recordings_service))
        privacy_rights = await PrivacyRights.open(
            pool,
            config,
            listener=listener,
            archive=recordings_service,
            live_sessions=visitor_sessions,
            say=say,
        )
        stack.push_async_callback(_cancel, asyncio.create_task(privacy_rights.run_daily(say)))
        media_events = await _start_media(config, stack, recordings_service, say)

        readiness = Readiness(availability, lambda: pool.fetchval("SELECT 1"), media_events)
        app = build_api(
            pool,
            authenticator,
            max_body_bytes=config.http.max_body_bytes,
            visitor_sessions=visitor_sessions,
            webhook_sender=webhook_sender,
            privacy_rights=privacy_rights,
            recordings_service=recordings_service,
            call_control=media_events,
            readiness=readiness,
            public_rate=TokenBuckets(
                config.http.public_rate_per_second, config.http.public_rate_burst
            ),
        )
        http_url = await _start_http(app, config, stack)
        say(f"http: listening on {http_url}")
        front_door, listening = await _start_sip(
            config,
            pool,
            stack,
            say,
            listener=listener,
            visitor_sessions=visitor_sessions,
            webhook_sender=webhook_sender,
            media_events=media_events,
            privacy_rights=privacy_rights,
            journal=journal,
            directory=NumberDirectory(lambda e164: numbers.find_by_e164(pool, e164), availability),
        )
        readiness.front_door = front_door
        for opened in listening:
            say(f"sip: listening on {opened}")
        yield RunningServer(dsn, http_url, listening, front_door)


async def serve(
    config: Config, say: Say, stop: asyncio.Event, now: asyncio.Event | None = None
) -> None:
    """Run until ``stop`` is set (the CLI sets it on SIGINT or SIGTERM), then drain: new calls
    are refused while those in progress may end, for up to ``[sip] drain_seconds`` or until
    ``now`` is set (a second signal); the calls left are hung up on both legs."""
    async with running(config, say) as server:
        say(f"callrouter {__version__} ready")
        await stop.wait()
        await _drain(server.front_door, config.sip.drain_seconds, now or asyncio.Event(), say)
        say("stopping")
    say("stopped")


async def _drain(front_door: FrontDoor, seconds: float, now: asyncio.Event, say: Say) -> None:
    front_door.draining = True
    b2bua = front_door.calls
    if b2bua is None or not b2bua.calls:
        return
    say(
        f"stopping: new calls get 503; waiting up to {seconds:g} s for "
        f"{len(b2bua.calls)} call(s) to end (signal again to end them now)"
    )
    await _until(lambda: not b2bua.calls, seconds, now)
    if b2bua.calls:
        say(f"stopping: hanging up {b2bua.shut_down()} call(s) on both legs")
        # The BYEs are transactions: keep the SIP stack up while they are answered (or
        # retransmitted over UDP), bounded.
        await _until(lambda: b2bua.byes_unanswered == 0, BYE_WAIT_SECONDS, asyncio.Event())


BYE_WAIT_SECONDS = 8.0
"""How long the BYEs of a shutdown may take to be answered before the server exits anyway."""


async def _until(done: Callable[[], bool], seconds: float, now: asyncio.Event) -> None:
    """Wait until ``done()``, ``seconds`` pass, or ``now`` is set, checking ten times a second."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not done() and not now.is_set():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(now.wait(), min(0.1, left))
