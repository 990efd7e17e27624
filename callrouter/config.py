"""Typed configuration: one TOML file, overridden by environment variables, overridden by flags.

Every setting is declared once, here, as a dataclass field with its default and a ``doc``;
the TOML keys, the ``CALLROUTER_*`` variable names and the command-line flags are all derived
from these declarations, so they cannot drift apart.

    [sip] udp_port = 5070   ->   CALLROUTER_SIP_UDP_PORT=5070   ->   --sip-udp-port 5070
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from callrouter.ip_networks import Network, parse_networks
from callrouter.sip.session_timer import MIN_SE

ENV_PREFIX = "CALLROUTER_"
CONFIG_PATH_ENV = "CALLROUTER_CONFIG"
CONFIG_SEARCH_PATH = (Path("/etc/callrouter/callrouter.toml"), Path("callrouter.toml"))
"""Where every command looks for its file when neither ``--config`` nor the variable names one."""
MIN_MESSAGE_BYTES = 1024
"""The least ``[sip] max_message_bytes`` may be: an INVITE with an SDP offer and a carrier's
headers runs to 1-2 KB."""


class ConfigError(Exception):
    """A setting is unknown or has the wrong type; the message names the source and the key."""


def setting(default: Any, doc: str) -> Any:
    """Declare a setting with its default and a one-line description (used for --help)."""
    return field(default=default, metadata={"doc": doc})


def section(cls: type[Any], doc: str) -> Any:
    """Declare a section (a TOML table) with its defaults."""
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the data lives."""

    url: str | None = setting(
        None,
        "PostgreSQL DSN (postgresql://...). Empty: callrouter starts and owns an embedded "
        "PostgreSQL under data_dir.",
    )
    pool_min: int = setting(2, "Minimum connections kept open.")
    pool_max: int = setting(10, "Maximum connections.")
    spool_max_bytes: int = setting(
        256 << 20,
        "Largest size, in bytes, of the spool under data_dir/spool that keeps call events "
        "(and their webhook events) on local disk while the database is away; beyond it they "
        "are held in memory only (logged, and counted in "
        "callrouter_journal_unspooled_events_total).",
    )
    max_held_events: int = setting(
        100_000,
        "Call events that may be held in memory only (the spool cannot take them, full or its "
        "disk full, and the database is away) before new calls are refused with 503 and "
        "Retry-After, and /v1/ready says the journal is down, so carriers and load balancers "
        "send them to a node that can record them; calls up go on. "
        "About 0.4 KB each, ~11 per answered call. 0: never refuse (memory then has no bound).",
    )


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP API."""

    host: str = setting("127.0.0.1", "Address the HTTP API listens on.")
    port: int = setting(8080, "Port the HTTP API listens on (0 picks a free one).")
    max_body_bytes: int = setting(65536, "Largest request body accepted, in bytes.")
    rate_per_second: float = setting(20.0, "Sustained requests per second allowed per API key.")
    rate_burst: int = setting(100, "Requests per API key allowed in a burst above the rate.")
    auth_failure_burst: int = setting(
        20, "Failed authentications per client address before it must slow to one a second."
    )
    public_rate_per_second: float = setting(
        20.0, "Sustained swap-script requests per second allowed per visitor address."
    )
    public_rate_burst: float = setting(
        100.0, "Swap-script requests per visitor address allowed in a burst above the rate."
    )
    listen_backlog: int = setting(1024, "Listen queue of the HTTP socket (capped by somaxconn).")
    max_connections: int = setting(4096, "HTTP connections open at once; more are closed at once.")
    max_connections_per_source: int = setting(
        256, "HTTP connections open at once from one address; more are closed at once."
    )
    idle_timeout: float = setting(
        60.0, "Seconds a connection may wait for its next request before it is closed."
    )
    header_timeout: float = setting(
        10.0, "Seconds a started request may take to send all its headers (slowloris)."
    )
    body_timeout: float = setting(
        30.0, "Seconds a request body may take to arrive once its headers are in (answer: 408)."
    )
    server_header: str = setting(
        "", "Value of the HTTP Server header; empty sends none (a banner only helps scanners)."
    )
    trusted_proxies: str = setting(
        "",
        "Comma-separated addresses or networks of reverse proxies in front of the HTTP API "
        "(e.g. 127.0.0.1 for nginx on this host): a request from one is taken to come from the "
        "client its X-Forwarded-For names, over the scheme of its X-Forwarded-Proto, and their "
        "connections are not held to max_connections_per_source. Empty trusts none.",
    )

    def proxy_networks(self) -> tuple[Network, ...]:
        """``trusted_proxies`` parsed; ValueError naming an entry that is not an address."""
        return parse_networks(self.trusted_proxies)

    webhooks_to_private_addresses: bool = setting(
        False,
        "Allow webhook endpoints on loopback and private networks (labs and tests only: it "
        "lets a client make the server call internal services).",
    )


@dataclass(frozen=True)
class SipConfig:
    """The SIP listeners."""

    host: str = setting("127.0.0.1", "Address the SIP listeners bind to (0.0.0.0 or :: for all).")
    advertise: str | None = setting(
        None,
        "Host or IP (optionally :port) written into Via, Contact, the From host and Call-IDs "
        "instead of the bind address: the public address behind NAT. Empty: the bind address, "
        "or with a wildcard bind the address of the interface that routes to each peer.",
    )
    port: int = setting(5060, "Port for SIP over UDP and TCP (0 picks a free one).")
    tls_port: int | None = setting(None, "Port for SIP over TLS; empty disables TLS.")
    tls_advertise: str | None = setting(
        None,
        "Host (optionally :port) the TLS listener writes instead: the name on its "
        "certificate. Empty: the host of sip.advertise with the TLS port.",
    )
    tls_certificate: Path | None = setting(None, "PEM certificate chain for SIP over TLS.")
    tls_private_key: Path | None = setting(None, "PEM private key for SIP over TLS.")
    tls_ca_file: Path | None = setting(
        None,
        "PEM bundle of the certificate authorities that peers we call over TLS must chain to "
        "(a self-signed certificate in it is trusted as itself: how one private PBX is pinned). "
        "Empty: the system's trust store. The peer's certificate must also name the host the "
        "call was sent to; verification cannot be turned off.",
    )
    t1: float = setting(0.5, "RFC 3261 T1: round-trip time estimate, seconds.")
    t2: float = setting(4.0, "RFC 3261 T2: maximum retransmit interval, seconds.")
    t4: float = setting(5.0, "RFC 3261 T4: maximum time a message stays in the network.")
    carriers: str = setting(
        "127.0.0.0/8, ::1/128",
        "Comma-separated addresses or networks (CIDR) allowed to send SIP (the `config` trunk; "
        "more trunks over /v1/trunks); others get 403.",
    )
    country: str = setting(
        "GB", "Region for numbers the `config` trunk writes nationally (0151 ... is +44151 ...)."
    )
    carrier_keepalives: bool = setting(
        True,
        "Whether the `config` trunk's leg of a call (a call from `carriers`, or out through "
        "`outbound_trunk`) gets dialog keepalive OPTIONS; false for a carrier that wrongly "
        "answers 481 to them, so its calls are not cut (the other leg still gets them). "
        "Trunks of /v1/trunks have their own `keepalives`.",
    )
    rate_per_second: float = setting(
        50.0, "Sustained SIP requests per second per source address and method."
    )
    rate_burst: int = setting(200, "SIP requests per source address and method in a burst.")
    method_rates: str = setting(
        "OPTIONS=10/50",
        "Per-method overrides of the rate: comma-separated METHOD=rate/burst. Over its rate a "
        "source gets one stateless 503 with Retry-After.",
    )
    unknown_sources: str = setting(
        "403",
        'What a source outside `carriers` gets: "403" (one stateless Forbidden) or "drop" '
        "(silence); over TCP and TLS its connection is closed at accept either way.",
    )
    flood_requests: int = setting(
        16,
        "Requests a source outside every trunk may send in `flood_window` seconds before it is "
        "banned (dropped unanswered) for `ban_seconds`; 0 turns the ban off.",
    )
    flood_window: float = setting(2.0, "Seconds over which flood requests are counted.")
    carrier_flood_requests: int = setting(
        4000,
        "The same for trunk sources and in-dialog requests, whose bursts are legitimate; "
        "0 turns the ban off.",
    )
    ban_seconds: float = setting(300.0, "Seconds a flooding source stays banned.")
    max_message_bytes: int = setting(
        65535,
        "Largest SIP message accepted, over UDP, TCP and TLS (at least 1024); a larger request "
        "gets 513 Message Too Large when its Via can be read, else it is dropped, and over TCP "
        "and TLS the connection is then closed.",
    )
    max_headers: int = setting(128, "Most header fields a SIP message may carry.")
    max_calls_per_trunk: int = setting(
        2000, "Calls up at once from one trunk; beyond, 503 with Retry-After. 0: no cap."
    )
    max_calls_per_client: int = setting(
        500, "Calls up at once to one client's numbers; beyond, 503 with Retry-After. 0: no cap."
    )
    agent: str = setting(
        "",
        "Product token sent as SIP Server / User-Agent and as warn-agent; empty names no "
        "product or version.",
    )
    listen_backlog: int = setting(
        1024, "Listen queue of the SIP TCP and TLS sockets (capped by somaxconn)."
    )
    max_connections: int = setting(
        4096, "SIP TCP and TLS connections from peers open at once; more are closed at accept."
    )
    max_connections_per_source: int = setting(
        32, "SIP TCP and TLS connections open at once from one address."
    )
    idle_timeout: float = setting(
        300.0, "Seconds a SIP TCP/TLS connection may stay silent between messages."
    )
    message_timeout: float = setting(
        10.0, "Seconds a started SIP message may take to arrive in full (slowloris)."
    )
    tls_handshake_timeout: float = setting(10.0, "Seconds a SIP TLS handshake may take.")
    outbound_trunk: str | None = setting(
        None, "SIP URI of the trunk that E.164 destinations are sent through (sip:gw.example)."
    )
    target_timeout: float = setting(
        5.0,
        "Seconds an outbound target may stay silent (not even 100 Trying) before the next "
        "RFC 3263 target (SRV, A record) is tried.",
    )
    static_routes: str = setting(
        "",
        "Comma-separated host=transport:address:port entries that answer before DNS "
        "(private PBXs, tests).",
    )
    dns_servers: str = setting(
        "", "Comma-separated address:port of DNS servers for RFC 3263; empty: /etc/resolv.conf."
    )
    session_expires: int = setting(
        1800,
        "Session interval (RFC 4028), seconds, asked of destinations when the caller asks for "
        "none: a destination that supports session timers then refreshes the call, and a call "
        "whose refreshes stop is ended. 0 asks for none; else at least 90.",
    )
    max_call_seconds: int = setting(
        14400,
        "Longest an answered call without a session timer may last, seconds; then both legs "
        "get BYE (a lost BYE would otherwise hold the call, and its client's max_calls_per_client "
        "share, for good). 0: no limit.",
    )
    dialog_keepalive_seconds: int = setting(
        60,
        "How often, seconds, an answered call without a session timer sends an in-dialog "
        "OPTIONS on both legs: a 481 or no answer (a peer that lost the call without a BYE) "
        "ends the call with BYE instead of leaving it up until max_call_seconds. 0: never; "
        "else at least 1.",
    )
    drain_seconds: float = setting(
        30.0,
        "On SIGTERM, seconds calls in progress may go on (new ones get 503 with Retry-After) "
        "before both legs of each are sent BYE; a second signal ends them at once.",
    )


@dataclass(frozen=True)
class PrivacyConfig:
    """Privacy rights: the secret that keys subject hashes, and how long data is kept."""

    secret_file: Path | None = setting(
        None,
        "File with the server secret that keys the hashes of phone numbers on the suppression "
        "list and in the request register; created (mode 0600) on first use, refused when "
        "group or others may read it. Empty: <data_dir>/privacy/secret. Back it up: without "
        "it no suppressed number is recognised.",
    )
    recordings_retention_days: int = setting(
        365, "Days a recording is kept before its key and file are destroyed (per-client override)."
    )
    data_retention_days: int = setting(
        730,
        "Days call records, visitor sessions, form submissions and webhook deliveries are kept; "
        "then only anonymous daily counts remain (per-client override).",
    )
    purge_hour: int = setting(3, "Hour of the day (UTC, 0-23) when `serve` runs the daily purge.")


@dataclass(frozen=True)
class VaultConfig:
    """Recording encryption at rest: where the keys live, and the file segment size."""

    key_ring: Path | None = setting(
        None,
        "Key ring file of key-encryption keys (JSON, mode 0600, created on first use, refused "
        "when group or others may read it). Empty: <data_dir>/vault/keyring.json. Keep it out "
        "of recording backups.",
    )
    keys_dir: Path | None = setting(
        None,
        "Directory of the wrapped per-recording data keys (mode 0700), kept apart from the "
        "audio: deleting a recording's entry makes every copy of its files unreadable. "
        "Empty: <data_dir>/vault/keys.",
    )
    segment_bytes: int = setting(
        16384, "Plaintext bytes per authenticated segment of a recording file (1 to 16777216)."
    )


@dataclass(frozen=True)
class MediaConfig:
    """The media workers: RTP relay and recorder for recorded calls."""

    workers: int = setting(
        os.cpu_count() or 1,
        "Media worker processes (default: the number of cores), each with its own slice of "
        "media.ports; 0 turns recording off.",
    )
    host: str = setting("127.0.0.1", "Address the RTP relay binds to (0.0.0.0 or :: for all).")
    advertise: str | None = setting(
        None,
        "IP address written into SDP c= and o= lines for recorded calls: the public address "
        "behind NAT. Empty: media.host when concrete, else the host of sip.advertise, else "
        "the address of the interface that routes to the caller.",
    )
    ports: str = setting("30000-39999", "RTP port range FIRST-LAST (RTCP uses port + 1).")
    timeout: float = setting(
        60.0, "Seconds without RTP after which a recorded call is considered dead and hung up."
    )
    format: str = setting("flac", 'Recording file format: "flac" (default) or "wav".')
    min_free_bytes: int = setting(
        256 * 1024 * 1024,
        "Free bytes the recordings filesystem must have for a new call to be recorded; below "
        "it calls are connected unrecorded, saying why (0: never refuse).",
    )

    def port_slices(self) -> list[tuple[int, int]]:
        """``ports`` cut into ``workers`` contiguous ranges (FIRST, LAST), one per worker, each
        starting on an even RTP port, the pairs shared out as evenly as they go.

        :raises ValueError: ``ports`` is not FIRST-LAST within 1024-65535, or it cannot give
            each worker the two port pairs one recorded call needs.
        """
        first, _, last = self.ports.partition("-")
        if not (first.isdigit() and last.isdigit() and 1024 <= int(first) < int(last) <= 65535):
            raise ValueError(f"{self.ports!r} is not FIRST-LAST within 1024-65535")
        # Pairs as media.relay.PortAllocator counts them: even RTP port p, RTCP on p + 1.
        starts = range(int(first) + int(first) % 2, int(last), 2)
        if len(starts) < 2 * self.workers:
            raise ValueError(
                f"{self.ports!r} holds {len(starts)} RTP port pairs: {self.workers} workers need "
                f"at least {2 * self.workers} (two per recorded call)"
            )
        share, extra = divmod(len(starts), max(self.workers, 1))
        slices = []
        index = 0
        for worker in range(self.workers):
            count = share + (worker < extra)
            slices.append((starts[index], starts[index + count - 1] + 1))
            index += count
        return slices


@dataclass(frozen=True)
class LogConfig:
    """What the server logs and how."""

    format: str = setting(
        "text", 'Log line format: "text" (for people) or "json" (one object a line, for tools).'
    )
    level: str = setting("info", "Lowest level logged: debug, info, warning or error.")
    levels: str = setting(
        "",
        "Per-component levels, comma-separated logger=level (callrouter.sip=debug, "
        "callrouter.access=warning).",
    )


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint, /metrics."""

    host: str = setting(
        "127.0.0.1", "Address of the separate metrics listener (when metrics.port is set)."
    )
    port: int | None = setting(
        None,
        "Port of a separate listener for /metrics (a private address); empty: /metrics is "
        "served on the HTTP API's port.",
    )
    check_timeout: float = setting(
        2.0,
        "Seconds a scrape of /metrics or a /v1/ready check waits for the database and for each "
        "media worker before counting it down.",
    )


@dataclass(frozen=True)
class ConsoleConfig:
    """The web console for clients' staff, served under / on the HTTP port."""

    enabled: bool = setting(True, "Serve the web console under / (the API stays under /v1).")
    public_url: str = setting(
        "",
        "Base URL people open the console at (https://calls.example.com), used in invitation "
        "links; an https URL also marks the session cookie Secure behind a TLS proxy. Empty: "
        "the HTTP listener's own address.",
    )
    session_idle_seconds: float = setting(
        1800.0, "Seconds a console session may go unused before it must log in again."
    )
    session_absolute_seconds: float = setting(
        43200.0, "Seconds a console session lasts at most, however busy (then log in again)."
    )
    audio_chunk_bytes: int = setting(
        262144,
        "Most bytes of a recording one open-ended Range request is answered with (206): each "
        "answer decrypts a bounded part, and the browser asks for the rest (or for where a "
        "seek goes) with further ranges.",
    )
    lockout_failures: int = setting(
        10, "Wrong passwords or codes in a row that lock a console user for lockout_seconds."
    )
    lockout_seconds: float = setting(900.0, "Seconds a locked console user cannot log in.")
    login_rate_per_minute: float = setting(
        10.0, "Sustained login attempts per minute allowed per client address."
    )
    login_burst: int = setting(20, "Login attempts per client address allowed in a burst.")
    link_hours: float = setting(
        72.0, "Hours an invitation or password-reset link stays valid (it works once)."
    )
    smtp_host: str = setting(
        "",
        "SMTP server that sends invitation links; empty: links are only shown to whoever "
        "made them.",
    )
    smtp_port: int = setting(587, "Port of the SMTP server.")
    smtp_security: str = setting(
        "starttls", 'How mail is protected: "starttls", "tls" (implicit) or "none" (local relay).'
    )
    smtp_user: str = setting("", "SMTP login; empty: none.")
    smtp_password: str = setting("", "SMTP password (prefer CALLROUTER_CONSOLE_SMTP_PASSWORD).")
    smtp_from: str = setting("", "From address of invitation mail (required with smtp_host).")
    smtp_timeout: float = setting(15.0, "Seconds an SMTP conversation may take.")


@dataclass(frozen=True)
class ClusterConfig:
    """Several nodes on one PostgreSQL: this node's name and when another counts as dead."""

    node: str = setting(
        "",
        "This node's name (letters, digits, '.', '_', '-'; at most 63), unique among the live "
        "nodes on one database: a second live node of the same name is refused at start. "
        "Empty: the host name.",
    )
    node_timeout: float = setting(
        10.0,
        "Seconds a node may go without a heartbeat before another node closes its open calls "
        "as interrupted (only once the node's database session has gone too).",
    )


@dataclass(frozen=True)
class Config:
    """All of callrouter's settings."""

    data_dir: Path = setting(
        Path("callrouter-data"), "Directory for the embedded PostgreSQL and the server's state."
    )
    dialplans_dir: Path = setting(Path("dialplans"), "Directory of dialplan TOML files.")
    dialplans_poll_seconds: float = setting(
        1.0, "How often the dialplans directory is checked for changed files, in seconds."
    )
    recordings_dir: Path = setting(Path("recordings"), "Root directory for encrypted recordings.")
    user: str = setting(
        "callrouter",
        "System user `serve` switches to once its ports are open when started as root (created "
        "if missing); the media worker and embedded PostgreSQL run as it too.",
    )
    database: DatabaseConfig = section(DatabaseConfig, "Database")
    http: HttpConfig = section(HttpConfig, "HTTP API")
    sip: SipConfig = section(SipConfig, "SIP")
    media: MediaConfig = section(MediaConfig, "Media worker and recording")
    privacy: PrivacyConfig = section(PrivacyConfig, "Privacy")
    vault: VaultConfig = section(VaultConfig, "Recording encryption")
    log: LogConfig = section(LogConfig, "Logging")
    metrics: MetricsConfig = section(MetricsConfig, "Metrics")
    console: ConsoleConfig = section(ConsoleConfig, "Web console")
    cluster: ClusterConfig = section(ClusterConfig, "Cluster")


@dataclass(frozen=True)
class SettingSpec:
    """One leaf setting, flattened: its place in the tree and its derived names."""

    path: tuple[str, ...]
    type: Any
    doc: str
    default: Any

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + "_".join(self.path).upper()

    @property
    def flag(self) -> str:
        return "--" + "-".join(self.path).replace("_", "-")


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def settings_of(cls: type[Any] = Config, prefix: tuple[str, ...] = ()) -> list[SettingSpec]:
    """Every leaf setting of ``cls`` in declaration order."""
    hints = typing.get_type_hints(cls)
    specs: list[SettingSpec] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            specs += settings_of(tp, (*prefix, f.name))
        else:
            specs.append(SettingSpec((*prefix, f.name), tp, f.metadata["doc"], f.default))
    return specs


SETTINGS: dict[tuple[str, ...], SettingSpec] = {s.path: s for s in settings_of()}


def _base_type(tp: Any) -> tuple[type[Any], bool]:
    """(the concrete type, whether None is allowed) for ``int``, ``Path | None`` and the like."""
    if isinstance(tp, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(spec: SettingSpec, value: Any, source: str, *, from_text: bool = False) -> Any:
    """Check a TOML value, or convert text (environment, flags), to the setting's type."""
    base, optional = _base_type(spec.type)
    where = f"{source}: {spec.dotted}"
    if from_text and isinstance(value, str) and base is not str:
        text = value.strip()
        if optional and text == "":
            return None
        try:
            if base is bool:
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError(text)
                return text.lower() in _TRUE
            return base(text)
        except ValueError:
            raise ConfigError(f"{where}: expected {base.__name__}, got {value!r}") from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is Path and isinstance(value, str):
        return Path(value)
    if base is str and isinstance(value, str):
        return value if value or not optional else None
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {base.__name__}, got {type(value).__name__} {value!r}")


def _line_of(text: str, table: tuple[str, ...], key: str) -> int:
    """Line number of ``key`` inside TOML ``[table]`` (tomllib reports no positions)."""
    current: tuple[str, ...] = ()
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\s*(#.*)?$")
    assignment = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            current = tuple(part.strip() for part in m.group(1).split("."))
            if current == (*table, key):
                return number
        elif (m := assignment.match(line)) and current == table and m.group(1) == key:
            return number
    return 0


def _flatten_toml(
    data: Mapping[str, Any],
    path: Path,
    text: str,
    origins: dict[tuple[str, ...], str],
    prefix: tuple[str, ...] = (),
) -> dict[tuple[str, ...], Any]:
    values: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        here = (*prefix, key)
        line = _line_of(text, prefix, key)
        where = f"{path}:{line}" if line else str(path)
        is_section = any(
            s.path[: len(here)] == here and len(s.path) > len(here) for s in SETTINGS.values()
        )
        if is_section:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {'.'.join(here)} must be a table")
            values.update(_flatten_toml(value, path, text, origins, here))
        elif here in SETTINGS:
            values[here] = _coerce(SETTINGS[here], value, where)
            origins[here] = where
        else:
            raise ConfigError(f"{where}: unknown key '{'.'.join(here)}'")
    return values


def _build(
    cls: type[Any], values: Mapping[tuple[str, ...], Any], prefix: tuple[str, ...] = ()
) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        here = (*prefix, f.name)
        if _is_section(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, here)
        elif here in values:
            kwargs[f.name] = values[here]
    return cls(**kwargs)


def find_config(
    flag: Path | None,
    environ: Mapping[str, str],
    search: tuple[Path, ...] = CONFIG_SEARCH_PATH,
) -> Path | None:
    """The configuration file every command reads, so that all find the same one as ``serve``:
    ``--config``, then ``CALLROUTER_CONFIG``, then the first of ``search`` that exists."""
    if flag is not None:
        return flag
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV])
    return next((path for path in search if path.is_file()), None)


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration: defaults < TOML file < ``CALLROUTER_*`` variables < flags.

    :param path: the TOML file, or None for none.
    :param environ: the process environment (only ``CALLROUTER_*`` names are read).
    :param flags: dotted setting name -> value, from the command line.
    :raises ConfigError: naming the file and line, the variable, or the flag that is wrong.
    """
    values: dict[tuple[str, ...], Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    """Where each value came from, for the checks that need the whole configuration."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        values.update(_flatten_toml(data, path, text, origins))
    by_env = {s.env_name: s for s in SETTINGS.values()}
    for name, raw in (environ or {}).items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        if name not in by_env:
            raise ConfigError(f"environment: unknown variable {name}")
        values[by_env[name].path] = _coerce(
            by_env[name], raw, f"environment {name}", from_text=True
        )
        origins[by_env[name].path] = f"environment {name}"
    for dotted, raw in (flags or {}).items():
        spec = SETTINGS.get(tuple(dotted.split(".")))
        if spec is None:
            raise ConfigError(f"command line: unknown setting {dotted}")
        values[spec.path] = _coerce(spec, raw, f"command line {spec.flag}", from_text=True)
        origins[spec.path] = f"command line {spec.flag}"
    config: Config = _build(Config, values)
    _check_media(config.media, origins)
    _check_http(config.http, origins)
    _check_sip(config.sip, origins)
    if config.database.max_held_events < 0:
        where = origins.get(("database", "max_held_events"), "default")
        raise ConfigError(
            f"{where}: database.max_held_events: {config.database.max_held_events} is negative "
            "(0: never refuse calls)"
        )
    return config


def _check_http(http: HttpConfig, origins: Mapping[tuple[str, ...], str]) -> None:
    try:
        http.proxy_networks()
    except ValueError as exc:
        where = origins.get(("http", "trusted_proxies"), "default")
        raise ConfigError(f"{where}: http.trusted_proxies: {exc}") from None


def _check_sip(sip: SipConfig, origins: Mapping[tuple[str, ...], str]) -> None:
    def named(key: str) -> str:
        return f"{origins.get(('sip', key), 'default')}: sip.{key}"

    if sip.session_expires and not MIN_SE <= sip.session_expires <= 86400:
        raise ConfigError(
            f"{named('session_expires')}: {sip.session_expires} is not 0 or "
            f"{MIN_SE}-86400 seconds (RFC 4028 Min-SE)"
        )
    if sip.max_message_bytes < MIN_MESSAGE_BYTES:
        raise ConfigError(
            f"{named('max_message_bytes')}: {sip.max_message_bytes} is below "
            f"{MIN_MESSAGE_BYTES} (an ordinary INVITE with SDP would be refused)"
        )
    if sip.max_call_seconds < 0:
        raise ConfigError(
            f"{named('max_call_seconds')}: {sip.max_call_seconds} is negative (0: no limit)"
        )
    if sip.dialog_keepalive_seconds < 0:
        raise ConfigError(
            f"{named('dialog_keepalive_seconds')}: {sip.dialog_keepalive_seconds} is negative "
            "(0: no keepalives; else at least 1 second)"
        )
    if sip.tls_ca_file is None:
        return
    where = f"{origins.get(('sip', 'tls_ca_file'), 'default')}: sip.tls_ca_file"
    try:
        data = sip.tls_ca_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {sip.tls_ca_file}: {exc.strerror}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{where}: {sip.tls_ca_file} holds no PEM certificate") from None


def _check_media(media: MediaConfig, origins: Mapping[tuple[str, ...], str]) -> None:
    """Refuse media settings no worker could run with, naming where each came from."""

    def where(key: str) -> str:
        return f"{origins.get(('media', key), 'default')}: media.{key}"

    if media.workers < 0:
        raise ConfigError(f"{where('workers')}: {media.workers} is negative (0: no recording)")
    if media.workers == 0:
        return  # no worker: the range is never used
    try:
        media.port_slices()
    except ValueError as exc:
        workers = origins.get(("media", "workers"))
        source = f" (media.workers from {workers})" if workers else ""
        raise ConfigError(f"{where('ports')}: {exc}{source}") from None
