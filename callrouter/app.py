"""The composition root: builds every service from the configuration, on one event loop.

Services start in dependency order and stop in reverse (an ``AsyncExitStack``), so a failure
half-way through start-up still stops what had started, PostgreSQL included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web
from OpenSSL import SSL

from callrouter import __version__
from callrouter.api.auth import Authenticator
from callrouter.api.connections import ConnectionGuard, GuardedSite, HttpLimits
from callrouter.api.forwarded import TrustedProxies
from callrouter.api.parse_errors import ProblemSite
from callrouter.api.scrape import PATH as METRICS_PATH
from callrouter.api.scrape import metrics_app
from callrouter.api.server import build_api
from callrouter.checks import media_workers_answer, pool_figures, scrape_refresh
from callrouter.cluster import ClusterNode, Duty, node_name
from callrouter.config import Config, ConfigError, ConsoleConfig
from callrouter.console import sessions as console_sessions
from callrouter.console.site import install as install_console
from callrouter.garbage_collection import settle_for_traffic
from callrouter.instance_lock import DataDirectoryLock
from callrouter.media.control import MediaWorkerProcess, RecordingSettings
from callrouter.media.pool import MediaPool, MediaSlot
from callrouter.media.recording import orphaned_raw_directories, raw_directory
from callrouter.media.relay import PortAllocator
from callrouter.metrics import Metrics, watch_event_loop
from callrouter.orphan_recordings import Swept, sweep
from callrouter.privacy.rights import PrivacyRights
from callrouter.privacy.secret import secret_path
from callrouter.privileges import (
    Account,
    account_for,
    drop_to,
    hand_over,
    unreachable_install,
)
from callrouter.ratelimit import TokenBuckets
from callrouter.recording_space import RecordingSpace
from callrouter.recordings import Recordings, finished_event
from callrouter.routing.anchoring import MediaAnchor
from callrouter.routing.b2bua import B2bua
from callrouter.routing.call import event_data
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.routing.directory import CHANNEL as NUMBERS_CHANNEL
from callrouter.routing.directory import NumberDirectory
from callrouter.routing.front_door import FrontDoor
from callrouter.routing.sessions import Sessions
from callrouter.routing.source_policy import MethodRate, SourcePolicy, parse_method_rates
from callrouter.routing.trunks import Trunk, TrunkTable
from callrouter.sip.endpoint import SipEndpoint
from callrouter.sip.message import Limits
from callrouter.sip.pike import FloodLimit, Pike
from callrouter.sip.transactions import Timers
from callrouter.stop_steps import STEP_SECONDS, push_bounded
from callrouter.store import api_keys, calls, leases, numbers, trunks
from callrouter.store.availability import DatabaseAvailability
from callrouter.store.call_journal import CallJournal
from callrouter.store.database import create_pool, ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from callrouter.store.heartbeat import Heartbeat
from callrouter.store.migrations import migrate
from callrouter.store.notifications import Notifications
from callrouter.store.numbers import Number
from callrouter.store.spool import EventSpool
from callrouter.supervisor import Supervisor
from callrouter.transport.advertise import media_advertisement, parse_advertise
from callrouter.transport.listeners import Listening, advertised, open_listeners, tls_options
from callrouter.transport.peer_tls import PeerTls, trust_root
from callrouter.transport.reactor import asyncio_reactor
from callrouter.transport.resolver import DnsLookup, Resolver, StaticRoutes
from callrouter.transport.service import SipService
from callrouter.transport.stream import InboundConnections, StreamLimits
from callrouter.vault import Vault, vault_paths
from callrouter.webhooks import WebhookSender

log = logging.getLogger(__name__)

Say = Callable[[str], None]
"""Where start-up facts for the operator go (the CLI prints them)."""

HEARTBEAT_SECONDS = 1.0
"""How often the heartbeat file and the node's row are written: an interrupted call's end is
known to this; so often too, free once-only duties are taken up."""
NUMBERS_REFRESH_SECONDS = 10.0
"""How often every number is read again while memory is not yet the answer for calls (the
LISTEN connection was lost, or the database is away)."""


@dataclass(frozen=True)
class RunningServer:
    """What a started server exposes to its caller (the CLI, the tests)."""

    dsn: str
    http_url: str
    sip: list[Listening]
    front_door: FrontDoor
    metrics_url: str
    """Where Prometheus scrapes (the API's port unless ``[metrics] port`` is set)."""
    metrics: Metrics
    sip_policy: SourcePolicy
    """Admission of SIP sources; its ``rejected`` counts refusals by reason."""


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
    if not owner and not EmbeddedPostgres.exists(root):
        raise ConfigError(
            f"no callrouter database in {root.resolve()}: only `callrouter serve` creates one; "
            "point --config, CALLROUTER_CONFIG or --data-dir at the server's data "
            "(or --database-url at its PostgreSQL)"
        )
    async with AsyncExitStack() as stack:
        if not owner:
            attached = EmbeddedPostgres.running_dsn(root)
            if attached is not None:
                yield attached
                return
            stack.enter_context(DataDirectoryLock(config.data_dir))
        server = EmbeddedPostgres(root, user=config.user)
        first_start = not server.initialised()
        server.start()
        stack.callback(server.stop)
        if await ensure_database(server.admin_dsn, DATABASE) or first_start:
            say(f"database: created an embedded PostgreSQL cluster in {root}")
        say(f"database: embedded PostgreSQL in {root} (Unix socket only, pid {server.pid})")
        if availability is not None:

            def changed(up: bool) -> None:
                availability.report(up, "embedded PostgreSQL exited")

            watching = Supervisor()
            watching.start("PostgreSQL supervisor", lambda: server.supervise(say, changed))
            stack.push_async_callback(watching.stop)
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


def _load_dialplans(config: Config, say: Say) -> DialplanLibrary:
    dialplans = DialplanLibrary(config.dialplans_dir, say)
    dialplans.refresh()
    if not dialplans.plans:
        warning = (
            f"no dialplan loaded from {config.dialplans_dir.resolve()}: only the built-in "
            "`default` routes calls, and numbers naming any other dialplan get 480"
        )
        log.warning(warning)
        say(f"dialplan: WARNING: {warning}")
    return dialplans


def _http_limits(config: Config) -> HttpLimits:
    http = config.http
    _positive("http", max_connections=http.max_connections, listen_backlog=http.listen_backlog)
    _positive("http", max_connections_per_source=http.max_connections_per_source)
    _positive("http", idle_timeout=http.idle_timeout, header_timeout=http.header_timeout)
    _positive("http", body_timeout=http.body_timeout)
    return HttpLimits(
        http.max_connections,
        http.max_connections_per_source,
        http.idle_timeout,
        http.header_timeout,
        TrustedProxies(http.proxy_networks()),
    )


def _stream_limits(config: Config) -> StreamLimits:
    sip = config.sip
    _positive("sip", max_connections=sip.max_connections, listen_backlog=sip.listen_backlog)
    _positive("sip", max_connections_per_source=sip.max_connections_per_source)
    _positive("sip", idle_timeout=sip.idle_timeout, message_timeout=sip.message_timeout)
    _positive("sip", tls_handshake_timeout=sip.tls_handshake_timeout)
    return StreamLimits(
        sip.max_connections,
        sip.max_connections_per_source,
        sip.idle_timeout,
        sip.message_timeout,
        sip.tls_handshake_timeout,
    )


DESCRIPTOR_RESERVE = 512
"""Descriptors kept for what is not a client connection: the database pool, the media worker,
recordings being written, dialplan files, outbound SIP connections."""


def _descriptor_budget(config: Config, say: Say) -> None:
    """Raise the soft descriptor limit as far as the connection limits need (the hard limit
    allows it without privileges), and say so when even the hard limit is too low: then a flood
    ends in refused connections rather than in the limits."""
    needed = config.sip.max_connections + config.http.max_connections + DESCRIPTOR_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and soft < hard:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < needed:
        say(
            f"limits: {soft} file descriptors for up to {needed - DESCRIPTOR_RESERVE} "
            "connections: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
            "sip.max_connections and http.max_connections"
        )


def _console_settings(config: Config) -> ConsoleConfig:
    console = config.console
    _positive(
        "console",
        session_idle_seconds=console.session_idle_seconds,
        session_absolute_seconds=console.session_absolute_seconds,
        lockout_failures=console.lockout_failures,
        lockout_seconds=console.lockout_seconds,
        login_rate_per_minute=console.login_rate_per_minute,
        login_burst=console.login_burst,
        link_hours=console.link_hours,
        audio_chunk_bytes=console.audio_chunk_bytes,
    )
    if console.public_url and not console.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"console.public_url: {console.public_url!r} is not an http(s) URL")
    return console


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{section}.{name}: must be above 0, got {value}")


async def _start_http(
    app: web.Application, config: Config, guard: ConnectionGuard, stack: AsyncExitStack
) -> str:
    # The site makes each connection's request handler, so their settings are given to it.
    # Requests in progress at a stop get STEP_SECONDS to finish (aiohttp's default is 60 s,
    # then as long again for the cancelled handler: two minutes of a stop on one request).
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=STEP_SECONDS)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    # aiohttp's own keep-alive close is the graceful one; the guard's idle deadline backs it up.
    site = GuardedSite(
        runner,
        config.http.host,
        config.http.port,
        guard,
        backlog=config.http.listen_backlog,
        keepalive_timeout=config.http.idle_timeout,
    )
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def _start_metrics_http(
    app: web.Application, host: str, port: int, idle_timeout: float, stack: AsyncExitStack
) -> str:
    """The separate ``[metrics]`` listener: meant for a private address that only the
    Prometheus server reaches, so it has no connection guard of its own."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=STEP_SECONDS)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = ProblemSite(runner, host, port, keepalive_timeout=idle_timeout)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return f"http://{bound_host}:{bound_port}"


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
    dialplans: DialplanLibrary,
    supervisor: Supervisor,
    metrics: Metrics,
    journal: CallJournal,
    directory: NumberDirectory,
) -> tuple[FrontDoor, SourcePolicy, list[Listening]]:
    sip = config.sip
    try:
        configured = Trunk.configured(sip)
        static = StaticRoutes.parse(sip.static_routes)
        dns_servers = [_host_port(s) for s in sip.dns_servers.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"sip: {exc}") from None
    if sip.unknown_sources not in ("403", "drop"):
        raise ConfigError(f"sip.unknown_sources: {sip.unknown_sources!r} is not 403 or drop")
    limits = _stream_limits(config)
    try:
        method_rates = parse_method_rates(sip.method_rates)
        strict = FloodLimit(sip.flood_requests, sip.flood_window) if sip.flood_requests else None
        carrier = (
            FloodLimit(sip.carrier_flood_requests, sip.flood_window)
            if sip.carrier_flood_requests
            else None
        )
    except ValueError as exc:
        raise ConfigError(f"sip.method_rates / sip.flood_*: {exc}") from None
    tls = None
    if sip.tls_port is not None:
        if sip.tls_certificate is None or sip.tls_private_key is None:
            raise ConfigError("sip.tls_port needs sip.tls_certificate and sip.tls_private_key")
        try:
            tls = tls_options(sip.tls_certificate, sip.tls_private_key)
        except (OSError, SSL.Error) as exc:
            raise ConfigError(f"sip.tls_certificate / sip.tls_private_key: {exc}") from None
    try:
        peer_tls = PeerTls(trust_root(sip.tls_ca_file))
    except (OSError, ValueError) as exc:  # the file changed since the configuration was read
        raise ConfigError(f"sip.tls_ca_file: {exc}") from None

    trunk_table = TrunkTable(configured)
    await _load_trunks(pool, trunk_table, say)
    await listener.add_listener(TRUNKS_CHANNEL, _reload_trunks(pool, trunk_table, say))

    supervisor.start("dialplan watcher", lambda: _watch(dialplans, config))

    reactor = asyncio_reactor(asyncio.get_running_loop())
    source_policy = SourcePolicy(
        trunk_table,
        MethodRate(sip.rate_per_second, sip.rate_burst),
        strict,
        carrier,
        Pike(sip.ban_seconds),
        method_rates,
        drop_unknown=sip.unknown_sources == "drop",
    )
    endpoint = SipEndpoint(
        {},
        Timers(sip.t1, sip.t2, sip.t4),
        Limits(sip.max_message_bytes, sip.max_headers),
        source_policy,
        sip.agent,
    )
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
        session_expires=sip.session_expires,
        max_call_seconds=sip.max_call_seconds,
        dialog_keepalive_seconds=sip.dialog_keepalive_seconds,
        sessions=visitor_sessions,
        webhooks=webhook_sender,
        media=media_events.anchor,
        privacy=privacy_rights.suppressions.treatment,
        metrics=metrics,
    )
    media_events.b2bua = b2bua
    source_policy.dialogs = b2bua.holds_dialog

    await listener.add_listener(NUMBERS_CHANNEL, directory.on_change)
    listener.on_lost(directory.untrust)
    listener.on_listening(directory.listen)
    await directory.listen()
    supervisor.start("number directory", lambda: directory.refresh(NUMBERS_REFRESH_SECONDS))

    async def find_number(e164: str) -> Number | None:
        """The dialled number; a pool number's lease and visit are made sure of first (the
        call may follow a visit another node served)."""
        number = await directory.find(e164)
        if number is not None and number.pool_id is not None:
            await visitor_sessions.prepare_call(e164)
        return number

    front_door = FrontDoor(
        service.respond,
        find_number,
        trunk_table,
        calls=b2bua,
        max_calls_per_trunk=sip.max_calls_per_trunk,
        max_calls_per_client=sip.max_calls_per_client,
        unrecordable=lambda: journal.refusing_calls,
    )
    service.handler = front_door.handle
    state = metrics.state
    state.calls_active = lambda: len(b2bua.calls)
    state.numbers_from_memory = lambda: directory.answering_from_memory
    state.sip_transactions = lambda: endpoint.transaction_count
    state.sip_requests = lambda: endpoint.counters.requests
    state.sip_responses = lambda: endpoint.counters.responses
    state.sip_retransmissions = lambda: endpoint.counters.retransmissions
    state.sip_rejected = lambda: source_policy.rejected
    state.calls_refused = lambda: front_door.refused
    state.sip_tls_refused = lambda: peer_tls.refused
    state.journal_lag = lambda: journal.lag(datetime.now(UTC))
    # A source outside every trunk could only be refused over TCP too: it holds no socket.
    # A banned one is refused at accept, and what it holds open is closed as its ban begins.
    inbound = InboundConnections(
        limits,
        source_policy.admits_source,
        banned=lambda host: source_policy.banned(host, reactor.seconds()),
    )
    source_policy.on_ban = inbound.close_source
    state.sip_connections_refused = lambda: inbound.refused
    listening = await open_listeners(
        reactor,
        service,
        sip.host,
        sip.port,
        stack,
        tls_port=sip.tls_port,
        tls=tls,
        inbound=inbound,
        peer_tls=peer_tls,
        backlog=sip.listen_backlog,
        max_message_bytes=sip.max_message_bytes,
    )
    service.addresses = advertised(listening, sip.advertise, sip.tls_advertise)
    shown = ", ".join(
        f"{a.host}:{a.port} ({transport})"
        if a.host
        else f"port {a.port} of the interface towards each peer ({transport})"
        for transport, a in service.addresses.listeners.items()
    )
    say(f"sip: Via and Contact name {shown}")
    if tls is not None:
        roots = sip.tls_ca_file or "the system's trust store"
        say(f"sip: peers called over TLS must chain to {roots} and name the host called")
    return front_door, source_policy, listening


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
    """Routes the media workers' events: finished recordings to the call journal (which
    stores each row after its call's, and survives a kill while the database is away), dead
    media to the B2BUA (which hangs those calls up, saying why)."""

    journal: CallJournal
    metrics: Metrics
    workers: list[MediaWorkerProcess] = field(default_factory=list)
    anchor: MediaAnchor | None = None
    space: RecordingSpace | None = None
    b2bua: B2bua | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def of_worker(self, number: int) -> Callable[[dict[str, Any]], None]:
        """The event handler of worker ``number`` (a restart of it is followed by its own
        ``recover``)."""
        return lambda event: self.handle(number, event)

    def handle(self, number: int, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "recording_ready":
            self.metrics.recording_finished(event)
            call_id = UUID(str(event["call"]))
            self.journal.record(finished_event(call_id, event["recording"], datetime.now(UTC)))
        elif kind == "recording_failed":
            self.metrics.recording_finished(event)
            log.error("recording %s failed: %s", event.get("recording"), event.get("error"))
        elif kind == "media_timeout" and self.b2bua is not None:
            self.b2bua.media_stopped(str(event.get("call")), "media timeout")
        elif kind == "worker_lost":
            lost = [str(call) for call in event.get("calls", [])]
            if self.anchor is not None:
                self.anchor.forget(lost)
            if self.b2bua is not None:
                for call in lost:
                    self.b2bua.media_stopped(call, "media worker lost")
        elif kind == "worker_restarted":
            self._spawn(self.recover(self.workers[number]))

    def pause_recording(self, call_id: UUID, paused: bool) -> str | None:
        """The API's pause/resume (PCI), for the B2BUA's live calls."""
        if self.b2bua is None:
            return "this server routes no calls"
        return self.b2bua.pause_recording(call_id, paused)

    def media_failed(self, key: str, reason: str) -> None:
        if self.b2bua is not None:
            self.b2bua.media_failed(key, reason)

    async def recover(self, worker: MediaWorkerProcess) -> int:
        """Finalise what a dead worker left in ``worker``'s raw directory (after every start of
        ``worker``); each file's row goes through the journal. How many."""
        reply = await worker.command("recover")
        finished = list(reply.get("recordings", []))
        now = datetime.now(UTC)
        for item in finished:
            # A recording's id is its call's (routing/anchoring.py names it so).
            self.journal.record(finished_event(UUID(str(item["id"])), item, now))
        return len(finished)

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
    """What /v1/ready checks: the database answers now, every media worker (when any is
    configured) answers a ping within ``[metrics] check_timeout`` (a hung worker is as down as
    a dead one), the recordings filesystem has ``[media] min_free_bytes`` free (otherwise calls
    are connected unrecorded: a load balancer should prefer another node), the call journal
    can keep new calls (it does not hold ``[database] max_held_events`` call events in memory
    only, which makes the front door refuse new INVITEs), and SIP takes calls (not draining for
    a shutdown)."""

    availability: DatabaseAvailability
    probe: Callable[[], Awaitable[object]]
    media: MediaEvents
    timeout: float
    journal: CallJournal
    front_door: FrontDoor | None = None

    async def check(self) -> dict[str, bool]:
        parts = {"database": await self.availability.check(self.probe)}
        if self.media.workers:
            parts["media"] = await media_workers_answer(self.media.workers, self.timeout)
        if self.media.space is not None:
            parts["recording_space"] = self.media.space.status != "low"
        parts["journal"] = not self.journal.refusing_calls
        if self.front_door is not None:
            parts["sip"] = not self.front_door.draining
        return parts


async def _start_media(
    config: Config,
    stack: AsyncExitStack,
    journal: CallJournal,
    say: Say,
    *,
    supervisor: Supervisor,
    account: Account | None,
    metrics: Metrics,
) -> MediaEvents:
    """The media workers (when configured) and the anchor the B2BUA uses to reach them."""
    events = MediaEvents(journal, metrics)
    media = config.media
    if media.workers < 1:
        say("media: no worker (media.workers = 0): calls are not recorded")
        return events
    if media.format not in ("flac", "wav"):
        raise ConfigError(f"media.format: {media.format!r} is not flac or wav")
    if media.min_free_bytes < 0:
        raise ConfigError(f"media.min_free_bytes: {media.min_free_bytes} is negative")
    try:
        slices = media.port_slices()
    except ValueError as exc:
        raise ConfigError(f"media.ports: {exc}") from None
    run = config.data_dir / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account is not None:
        hand_over(_state_paths(config), account, skip=[config.data_dir / "postgres"])
    address = media_advertisement(media.host, media.advertise, config.sip.advertise)
    key_ring, keys_dir = vault_paths(config)
    recordings_dir = config.recordings_dir.resolve()
    orphans = await asyncio.get_running_loop().run_in_executor(
        None, orphaned_raw_directories, recordings_dir, media.workers
    )
    slots = []
    for number, (first, last) in enumerate(slices):
        worker = MediaWorkerProcess(
            run / f"media-{number}.sock",
            media.host,
            f"{first}-{last}",
            media_timeout=media.timeout,
            on_event=events.of_worker(number),
            user=account.name if account is not None else None,
            log=(config.log.format, config.log.level),
            name=str(number),
            recording=RecordingSettings(
                recordings_dir,
                key_ring.resolve(),
                keys_dir.resolve(),
                config.vault.segment_bytes,
                media.format,
                raw_directory(recordings_dir, number),
                # Worker 0 also finalises what no running worker owns (an older layout, a
                # server that ran with more workers): nobody writes there any more.
                orphans if number == 0 else (),
            ),
        )
        events.workers.append(worker)
        slots.append(MediaSlot(number, worker, PortAllocator(first, last)))
    try:
        await asyncio.gather(*(worker.start() for worker in events.workers))
    finally:
        for worker in events.workers:
            stack.push_async_callback(worker.stop)
    space = RecordingSpace(config.recordings_dir, media.min_free_bytes, say)
    await asyncio.get_running_loop().run_in_executor(None, space.check)
    supervisor.start("recording space", space.run)
    events.space = space
    events.anchor = MediaAnchor(
        MediaPool(slots), address, events.media_failed, refusal=space.refusal
    )
    recovered = await asyncio.gather(*(events.recover(worker) for worker in events.workers))
    if sum(recovered):
        say(f"media: finalised {sum(recovered)} recording(s) interrupted by the last run")
    shown = address if isinstance(address, str) else "the interface towards each caller"
    for worker in events.workers:
        say(f"media: worker {worker.name} pid {worker.pid}, RTP on {media.host}:{worker.ports}")
    say(f"media: {len(events.workers)} worker(s), SDP names {shown}")
    return events


SWEEP_MARK = "recordings-swept.json"
"""How far the start-up sweep of the recordings directory has checked (under ``data_dir``)."""


def _say_swept(swept: Swept, say: Say) -> None:
    if swept.since is None:
        say(f"recordings: checked all {swept.checked} final file(s) ({swept.why_full})")
    else:
        since = datetime.fromtimestamp(swept.since, UTC).isoformat(timespec="seconds")
        say(
            f"recordings: checked {swept.checked} final file(s) changed since {since} or kept, "
            f"passed over {swept.passed_over} older (sweep mark)"
        )
    if swept.recorded:
        say(f"recordings: {swept.recorded} finalised file(s) without a row given one")
    if swept.without_call or swept.unreadable:
        say(
            f"recordings: kept {len(swept.without_call)} finalised file(s) without a row whose "
            f"call is gone and {len(swept.unreadable)} unreadable one(s); see the log"
        )


POOL_CHANNEL = "pool_changed"
TRUNKS_CHANNEL = "trunks_changed"
DISPOSAL_CHANNEL = "recording_disposed"


DISPOSAL_POLL_SECONDS = 60.0
"""How often the disposal duty looks for deletions without a NOTIFY (one sent while this node's
LISTEN connection was down)."""


async def _disposing(recordings_service: Recordings, deleted: asyncio.Event, say: Say) -> None:
    """The recording-disposal duty: shred what is queued when it is taken up, then each time a
    recording row is deleted somewhere (migration 0007's trigger NOTIFYs every node)."""
    while True:
        deleted.clear()
        if shredded := await recordings_service.dispose_pending():
            say(f"recordings: shredded {shredded} deleted recording(s)")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(deleted.wait(), DISPOSAL_POLL_SECONDS)


async def _completed_as_interrupted(
    webhook_sender: WebhookSender,
    connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
    closed: list[calls.InterruptedCall],
) -> None:
    """Queue, in the caller's transaction, the call.completed event of each call it closed as
    interrupted: what the node that had the call would have sent, named by the call's id as
    that node's would be (routing/b2bua.py), so a call ends once for its webhooks."""
    for lost in closed:
        data = event_data(
            lost.id,
            lost.tracking_number,
            lost.caller_number,
            lost.session_id,
            lost.attribution,
            disposition="interrupted",
            hangup_by="system",
            reason=lost.hangup_reason,
            attempts=lost.attempts,
            journey=lost.journey,
        )
        await webhook_sender.emit_in(
            connection, lost.client_id, "call.completed", data, event_id=lost.id
        )


async def _closing_lost_calls(
    pool: asyncpg.Pool[asyncpg.Record],
    node_timeout: float,
    webhook_sender: WebhookSender,
    say: Say,
) -> None:
    """The duty of closing, as interrupted, the open calls of nodes that are gone, each with
    the call.completed event its own node would have sent, in the same transaction."""
    while True:
        async with pool.acquire() as connection, connection.transaction():
            closed = await calls.close_on_lost_nodes(connection, node_timeout)
            await _completed_as_interrupted(webhook_sender, connection, closed)
        for node, count in Counter(lost.node for lost in closed).items():
            say(f"cluster: closed {count} open call(s) of lost node {node} as interrupted")
        await asyncio.sleep(HEARTBEAT_SECONDS)


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


@asynccontextmanager
async def running(config: Config, say: Say) -> AsyncIterator[RunningServer]:
    """Start everything ``callrouter serve`` runs; stop it all on exit."""
    _check_advertise(config)
    name = node_name(config.cluster.node)
    _positive("cluster", node_timeout=config.cluster.node_timeout)
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
        push_bounded(stack, "the database pool", pool.close, say, abandon=pool.terminate)
        # Leases commit without waiting for the disk: a WAL flush would cost each swap-script
        # request milliseconds. A crash of PostgreSQL itself can lose the last instant of
        # leases; those visits' next heartbeats find them gone (README: The pool across nodes).
        lease_pool = await create_pool(
            dsn, min_size=1, max_size=config.database.pool_max, wait_for_disk=False
        )
        push_bounded(stack, "the lease pool", lease_pool.close, say, abandon=lease_pool.terminate)
        # Before anything is written: a second live node of this name is refused. Its duties
        # stop before either pool closes.
        node = ClusterNode(dsn, name, say, beat_every=HEARTBEAT_SECONDS)
        last_alive = await node.join()
        push_bounded(stack, "leaving the cluster", node.leave, say)
        say(f"cluster: node {name}")
        # Background jobs are cancelled before the pool they use closes.
        supervisor = Supervisor()
        push_bounded(stack, "the background jobs", supervisor.stop, say)
        metrics = Metrics()
        supervisor.start("event loop lag", lambda: watch_event_loop(metrics.event_loop_lag))
        supervisor.start(
            "database watch", lambda: availability.watch(lambda: pool.fetchval("SELECT 1"))
        )
        # Call events of the last run that the database does not have yet (it was away, or we
        # were killed) are written first; only then are calls still open known interrupted.
        # Webhook events of calls ride the journal (stored with the call's rows); the journal
        # wakes the sender when it has queued deliveries.
        webhook_sender = WebhookSender(
            pool, allow_private=config.http.webhooks_to_private_addresses
        )
        # Finished recordings ride the journal too: the service logs each row it makes.
        vault = Vault.from_config(config)
        recordings_service = Recordings(pool, vault, config.recordings_dir)
        spool = EventSpool(config.data_dir / "spool", max_bytes=config.database.spool_max_bytes)
        journal = await stack.enter_async_context(
            CallJournal(
                pool,
                spool,
                availability=availability,
                node=name,
                webhooks_queued=webhook_sender.wake,
                recordings_written=recordings_service.written,
                max_held=config.database.max_held_events,
            )
        )
        metrics.state.journal_unspooled = lambda: journal.unspooled
        metrics.state.journal_held = lambda: journal.held
        await journal.flushed()
        if journal.replayed:
            say(f"calls: wrote {journal.replayed} call event(s) spooled by the last run")
        heartbeat = Heartbeat(config.data_dir / "heartbeat")
        # The file outlives a database outage; the node's row stands in when the file is lost.
        async with pool.acquire() as connection, connection.transaction():
            interrupted = await calls.close_interrupted(
                connection, heartbeat.last() or last_alive, name
            )
            await _completed_as_interrupted(webhook_sender, connection, interrupted)
        if interrupted:
            say(
                f"calls: closed {len(interrupted)} call(s) left open by the last run as interrupted"
            )
        supervisor.start("heartbeat", lambda: heartbeat.run(HEARTBEAT_SECONDS))

        authenticator = Authenticator(
            pool,
            TokenBuckets(config.http.rate_per_second, config.http.rate_burst),
            TokenBuckets(rate=1.0, burst=config.http.auth_failure_burst),
        )
        listener = Notifications(dsn)
        await listener.connect()
        push_bounded(stack, "the LISTEN connection", listener.close, say)
        # Stopped before the connection closes, so it does not reconnect during the stop.
        notifications = Supervisor()
        notifications.start("notifications", lambda: listener.run(say))
        push_bounded(stack, "the notifications", notifications.stop, say)
        await listener.add_listener(api_keys.REVOKED_CHANNEL, authenticator.on_revoked)

        # Pools and live leases are in memory before the API or SIP serves anything. Other
        # nodes' changes are heard from before the read, so none falls between the two.
        visitor_sessions = Sessions(lease_pool, time.time, say)
        await listener.add_listener(POOL_CHANNEL, _reload_pool(visitor_sessions))
        await listener.add_listener(leases.LEASE_CHANNEL, visitor_sessions.on_lease)
        await listener.add_listener(leases.SESSION_CHANNEL, visitor_sessions.on_session)
        listener.on_lost(visitor_sessions.untrust)
        listener.on_listening(visitor_sessions.resync)
        restored = await visitor_sessions.load()
        say(f"sessions: {len(visitor_sessions.pools)} pool(s), {restored} live lease(s) restored")
        # At stop, once the API is closed: the sweeper ends (a flush it was making goes back to
        # the renewals held), then every renewal held is written before the lease pool closes.
        stack.push_async_callback(visitor_sessions.stop)
        sweeper = Supervisor()
        sweeper.start("session sweeper", visitor_sessions.run)
        push_bounded(stack, "the session sweeper", sweeper.stop, say)
        metrics.state.sessions_live = lambda: visitor_sessions.live
        metrics.state.pools = lambda: pool_figures(visitor_sessions)

        await webhook_sender.watch(listener)
        node.duty(Duty.WEBHOOK_DELIVERIES, webhook_sender.run)
        metrics.state.webhook_deliveries = lambda: webhook_sender.outcomes

        deleted = asyncio.Event()
        await listener.add_listener(DISPOSAL_CHANNEL, lambda *_: deleted.set())
        node.duty(Duty.RECORDING_DISPOSALS, lambda: _disposing(recordings_service, deleted, say))
        privacy_rights = await PrivacyRights.open(
            pool,
            config,
            listener=listener,
            archive=recordings_service,
            live_sessions=visitor_sessions,
            say=say,
        )
        node.duty(Duty.RETENTION_PURGE, lambda: privacy_rights.run_daily(say))
        node.duty(
            Duty.CLOSE_LOST_CALLS,
            lambda: _closing_lost_calls(pool, config.cluster.node_timeout, webhook_sender, say),
        )
        # Stopped before the node leaves (its duties with it), so it does not join again.
        metrics.state.duties = lambda: {duty.label: duty in node.held for duty in Duty}
        cluster = Supervisor()
        cluster.start("cluster node", node.run)
        push_bounded(stack, "the cluster duties", cluster.stop, say)
        account = _run_as(config, say)
        media_started = time.time()
        media_events = await _start_media(
            config,
            stack,
            journal,
            say,
            supervisor=supervisor,
            account=account,
            metrics=metrics,
        )
        # The rows of files the workers' recover finalised are in first: they are not orphans.
        await journal.flushed()
        swept = await sweep(
            pool,
            vault,
            config.recordings_dir,
            media_started,
            journal=journal,
            mark=config.data_dir / SWEEP_MARK,
        )
        _say_swept(swept, say)
        metrics.state.recordings_without_row = lambda: {
            "no_call": len(swept.without_call),
            "unreadable": len(swept.unreadable),
        }
        refresh = scrape_refresh(metrics, pool, media_events.workers, config.metrics.check_timeout)
        dialplans = _load_dialplans(config, say)

        guard = ConnectionGuard(_http_limits(config))
        _descriptor_budget(config, say)
        readiness = Readiness(
            availability,
            lambda: pool.fetchval("SELECT 1"),
            media_events,
            config.metrics.check_timeout,
            journal,
        )
        app = build_api(
            pool,
            authenticator,
            max_body_bytes=config.http.max_body_bytes,
            visitor_sessions=visitor_sessions,
            webhook_sender=webhook_sender,
            privacy_rights=privacy_rights,
            recordings_service=recordings_service,
            call_control=media_events,
            dialplans=dialplans,
            recording_space=media_events.space,
            readiness=readiness,
            public_rate=TokenBuckets(
                config.http.public_rate_per_second, config.http.public_rate_burst
            ),
            connection_guard=guard,
            trusted_proxies=guard.limits.proxies,
            body_timeout=config.http.body_timeout,
            metrics=metrics,
            scrape=refresh if config.metrics.port is None else None,
            server_header=config.http.server_header,
        )
        if config.console.enabled:
            console = install_console(app, pool, _console_settings(config))
            supervisor.start("console session sweeper", lambda: console_sessions.sweep(console))
        http_url = await _start_http(app, config, guard, stack)
        say(f"http: listening on {http_url}")
        metrics_url = http_url + METRICS_PATH
        if config.metrics.port is not None:
            own = metrics_app(metrics, refresh)
            metrics_url = (
                await _start_metrics_http(
                    own, config.metrics.host, config.metrics.port, config.http.idle_timeout, stack
                )
                + METRICS_PATH
            )
        say(f"metrics: {metrics_url}")
        front_door, sip_policy, listening = await _start_sip(
            config,
            pool,
            stack,
            say,
            listener=listener,
            visitor_sessions=visitor_sessions,
            webhook_sender=webhook_sender,
            media_events=media_events,
            privacy_rights=privacy_rights,
            dialplans=dialplans,
            supervisor=supervisor,
            metrics=metrics,
            journal=journal,
            directory=NumberDirectory(
                lambda e164: numbers.find_by_e164(pool, e164),
                lambda: numbers.list_all(pool),
                availability,
            ),
        )
        readiness.front_door = front_door
        for opened in listening:
            say(f"sip: listening on {opened}")
        # Only now: a start that fails before listening (a port in use) must not spend the key.
        await _first_operator_key(pool, say)
        if account is not None:
            # Ports are open: root is not needed any more. What start-up wrote is handed over.
            hand_over(_state_paths(config), account, skip=[config.data_dir / "postgres"])
            drop_to(account)
            say(f"privileges: running as {account.name} (uid {account.uid})")
        yield RunningServer(dsn, http_url, listening, front_door, metrics_url, metrics, sip_policy)


def _check_advertise(config: Config) -> None:
    """Refuse an address no peer could use before anything starts."""
    for name, value in (
        ("advertise", config.sip.advertise),
        ("tls_advertise", config.sip.tls_advertise),
    ):
        try:
            if value:
                parse_advertise(value)
        except ValueError as exc:
            raise ConfigError(f"sip.{name}: {exc}") from None
    try:
        media_advertisement(config.media.host, config.media.advertise, config.sip.advertise)
    except ValueError as exc:
        raise ConfigError(f"media.advertise: {exc}") from None


def _run_as(config: Config, say: Say) -> Account | None:
    """The account ``serve`` switches to once its ports are open: None when not root, or when
    that account could not read this Python or callrouter (it says so, loudly)."""
    account = account_for(config.user)
    if account is None:
        return None
    if (blocked := unreachable_install(account)) is not None:
        say(
            f"privileges: WARNING: staying root: {blocked} keeps user {account.name!r} from "
            f"this Python or callrouter; install them where it can read them (/opt, /usr) "
            f"or chmod o+x {blocked}"
        )
        return None
    return account


def _state_paths(config: Config) -> list[Path]:
    """What the server reads and writes after start-up: the user it runs as must own these.
    Files configured outside the data directory are handed over alone, not their folders
    (which may hold the configuration)."""
    key_ring, keys_dir = vault_paths(config)
    return [config.data_dir, config.recordings_dir, key_ring, keys_dir, secret_path(config)]


async def serve(
    config: Config, say: Say, stop: asyncio.Event, now: asyncio.Event | None = None
) -> None:
    """Run until ``stop`` is set (the CLI sets it on SIGINT or SIGTERM), then drain: new calls
    are refused while those in progress may end, for up to ``[sip] drain_seconds`` or until
    ``now`` is set (a second signal); the calls left are hung up on both legs."""
    async with running(config, say) as server:
        settle_for_traffic()
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
