"""The ``callrouter`` command: serve, migrate, keys, dialplan, vault, purge, privacy, users,
backup, restore, health, probe.

Every command takes ``--config FILE`` and one flag per setting (see ``callrouter serve --help``);
flags override ``CALLROUTER_*`` variables, which override the file. Every command finds the same
file as serve (``find_config``), and only serve and restore ever create a database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

import aiohttp
import asyncpg
import uvloop

from callrouter import __version__, logs
from callrouter.app import database_dsn, migrate_database, serve
from callrouter.backup import (
    BackupError,
    check_restorable,
    check_targets,
    restore_backup,
    take_backup,
)
from callrouter.config import (
    CONFIG_PATH_ENV,
    CONFIG_SEARCH_PATH,
    SETTINGS,
    Config,
    ConfigError,
    find_config,
    load_config,
)
from callrouter.console import accounts
from callrouter.console.accounts import AccountError
from callrouter.console.links import token_hash, token_of
from callrouter.console.mail import Mailer
from callrouter.console.passwords import Passwords, WeakPassword, check_policy
from callrouter.console.permissions import CLIENT_ROLES
from callrouter.instance_lock import DataDirectoryInUse, DataDirectoryLock
from callrouter.numbering import NumberFormatError, to_e164
from callrouter.privacy import audit
from callrouter.privacy.register import RequestKind
from callrouter.privacy.rights import PrivacyRights, RequestRefused
from callrouter.privacy.secret import SecretFileError
from callrouter.privacy.subjects import Subject
from callrouter.privileges import PrivilegeError
from callrouter.routing.dialplan import DialplanError, load_dialplan
from callrouter.routing.dialplan import explain as explain_plan
from callrouter.routing.dialplans import DialplanLibrary
from callrouter.store import api_keys, console_audit, console_users, numbers
from callrouter.store import console_sessions as console_session_rows
from callrouter.store import privacy as privacy_store
from callrouter.store.api_keys import API_KEYS
from callrouter.store.database import StoreConflict, connect
from callrouter.store.embedded import EmbeddedPostgresError
from callrouter.store.migrations import MigrationError
from callrouter.vault import Vault, VaultError, vault_paths


class HealthCheckFailed(Exception):
    """The API did not answer, or answered that it is not healthy."""


EXPECTED_FAILURES = (
    AccountError,
    BackupError,
    HealthCheckFailed,
    ConfigError,
    DataDirectoryInUse,
    EmbeddedPostgresError,
    MigrationError,
    NumberFormatError,
    OSError,
    PrivilegeError,
    RequestRefused,
    SecretFileError,
    VaultError,
    WeakPassword,
    asyncpg.PostgresError,
)


def say(line: str) -> None:
    print(line, flush=True)


def _log_line(line: str) -> None:
    """What ``serve`` tells the operator goes through the log, in its format."""
    logging.getLogger("callrouter").info(line)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help=f"TOML configuration file (or ${CONFIG_PATH_ENV})"
    )
    group = parser.add_argument_group("settings (each also CALLROUTER_<NAME> or in the file)")
    for spec in SETTINGS.values():
        default = "" if spec.default is None else f" (default: {spec.default})"
        group.add_argument(
            spec.flag,
            dest=f"setting:{spec.dotted}",
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=spec.doc + default,
        )


def _config_from(args: argparse.Namespace) -> Config:
    flags = {
        name.removeprefix("setting:"): value
        for name, value in vars(args).items()
        if name.startswith("setting:")
    }
    return load_config(find_config(args.config, os.environ), os.environ, flags)


def _config_searched(args: argparse.Namespace) -> str:
    """Which configuration file this command read, for error messages."""
    found = find_config(getattr(args, "config", None), os.environ)
    if found is not None:
        return f"configuration: {found.resolve()}"
    places = ", ".join(str(p.absolute()) for p in CONFIG_SEARCH_PATH)
    return f"configuration: none (no --config, no ${CONFIG_PATH_ENV}, none of {places})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callrouter", description="Call tracking and recording server."
    )
    parser.add_argument("--version", action="version", version=f"callrouter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_setting_flags(commands.add_parser("serve", help="run the server (SIP, HTTP API)"))
    _add_setting_flags(commands.add_parser("migrate", help="apply database migrations"))

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key and print its secret once")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--client", type=UUID, help="a key for this client id")
    owner.add_argument(
        "--operator", action="store_true", help="an operator key (every client, every route)"
    )
    create.add_argument("--name", default="", help="what the key is for")
    listing = key_commands.add_parser("list", help="list keys")
    listing.add_argument("--client", type=UUID, help="only this client's keys")
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", type=UUID)
    for sub in (create, listing, revoke):
        _add_setting_flags(sub)

    dialplan = commands.add_parser("dialplan", help="check dialplans and explain routing")
    plan_commands = dialplan.add_subparsers(
        dest="dialplan_command", required=True, metavar="ACTION"
    )
    check = plan_commands.add_parser("check", help="validate dialplan files (file:line errors)")
    check.add_argument("files", type=Path, nargs="+")
    explain = plan_commands.add_parser("explain", help="what a call to a number would do")
    explain.add_argument("number", help="the tracking number (E.164)")
    explain.add_argument(
        "--at", type=_timestamp, help="when the call comes (ISO 8601; default: now)"
    )
    explain.add_argument("--caller", default="", help="the caller's number (E.164)")
    _add_setting_flags(explain)

    vault = commands.add_parser("vault", help="recording encryption keys")
    vault_commands = vault.add_subparsers(dest="vault_command", required=True, metavar="ACTION")
    rotate = vault_commands.add_parser("rotate", help="make a new key-encryption key current")
    rotate.add_argument(
        "--rewrap", action="store_true", help="then re-wrap every data key under it"
    )
    rewrap = vault_commands.add_parser(
        "rewrap", help="re-wrap the data keys still under older key-encryption keys"
    )
    status = vault_commands.add_parser(
        "status", help="key-encryption key ids, the current one, data keys each wraps"
    )
    for sub in (rotate, rewrap, status):
        _add_setting_flags(sub)
    _add_privacy_commands(commands)
    _add_users_commands(commands)

    backup = commands.add_parser(
        "backup", help="back up the database and recordings, and the keys to another place"
    )
    backup.add_argument("target", type=Path, help="new directory for the data")
    backup.add_argument(
        "--keys-dir",
        type=Path,
        required=True,
        help="new directory for the key ring, data keys and privacy secret (not inside TARGET)",
    )
    restore = commands.add_parser("restore", help="restore a backup into a fresh data directory")
    restore.add_argument("source", type=Path, help="the backup's data directory")
    restore.add_argument(
        "--keys-dir",
        type=Path,
        help="restore the keys backup too (only when the live key store is lost: it brings "
        "back recordings erased since); default: use the configured key store",
    )
    for sub in (backup, restore):
        _add_setting_flags(sub)
    _add_setting_flags(
        commands.add_parser(
            "health", help="ask the configured HTTP API whether it is up (container checks)"
        )
    )
    probe = commands.add_parser(
        "probe", help="place a real test call through the router and report how it went"
    )
    probe.add_argument("number", help="the tracking number to call (E.164)")
    probe.add_argument(
        "--answer",
        action="store_true",
        help="answer it ourselves: point the number at a desk this probe runs, for the call",
    )
    probe.add_argument("--json", action="store_true", help="print the report as JSON")
    probe.add_argument(
        "--ring-timeout", type=float, default=30.0, help="seconds to wait for an answer"
    )
    probe.add_argument(
        "--local-host",
        default="127.0.0.1",
        help="address the probe's phones bind to (the router must reach it with --answer)",
    )
    _add_setting_flags(probe)
    return parser


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    now = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_asked() -> None:
        # The first SIGINT/SIGTERM drains the calls in progress; the next one means now.
        (now if stop.is_set() else stop).set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_asked)
    await serve(config, _log_line, stop, now)


async def _migrate(config: Config) -> None:
    async with database_dsn(config, say, owner=False) as dsn:
        await migrate_database(dsn, say)
        say("database: schema is up to date")


async def _with_connection(
    config: Config, action: Callable[[asyncpg.Connection[asyncpg.Record]], Awaitable[None]]
) -> None:
    async with database_dsn(config, lambda _line: None, owner=False) as dsn:
        await migrate_database(dsn, lambda _line: None)
        connection = await connect(dsn)
        try:
            await action(connection)
        finally:
            await connection.close()


async def _keys(config: Config, args: argparse.Namespace) -> None:
    async def create(db: asyncpg.Connection[asyncpg.Record]) -> None:
        if args.client is not None and not await db.fetchval(
            "SELECT 1 FROM clients WHERE id = $1", args.client
        ):
            raise ConfigError(f"no client {args.client}")
        key, secret = await api_keys.create(db, args.client, args.name)
        kind = f"client {key.client_id}" if key.client_id else "operator"
        say(f"created {kind} key {key.id}")
        say(f"secret (shown once, store it now): {secret}")

    async def listing(db: asyncpg.Connection[asyncpg.Record]) -> None:
        after = None
        while page := await API_KEYS.list_page(db, args.client, after, 200):
            for key in page:
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                owner = key.client_id or "operator"
                say(f"{key.id}  {key.prefix}…  {owner}  {state}  {key.name}")
            after = page[-1].id

    async def revoke(db: asyncpg.Connection[asyncpg.Record]) -> None:
        if await api_keys.revoke(db, args.key_id, None) is None:
            raise ConfigError(f"no key {args.key_id}")
        say(f"revoked key {args.key_id}")

    actions = {"create": create, "list": listing, "revoke": revoke}
    await _with_connection(config, actions[args.keys_command])


def _add_users_commands(commands: Any) -> None:
    users = commands.add_parser("users", help="console users (clients' staff, operator users)")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create a user and print a one-time link that sets their password"
    )
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument(
        "--role", required=True, choices=[*CLIENT_ROLES, "operator"], help="what they may do"
    )
    create.add_argument("--client", type=UUID, help="the client (none: an operator user)")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of printing a link",
    )
    listing = actions.add_parser("list", help="list users")
    listing.add_argument("--client", type=UUID, help="only this client's users")
    reset = actions.add_parser(
        "reset-password", help="print a one-time link that sets a new password (unlocks too)"
    )
    reset.add_argument("email")
    disable = actions.add_parser("disable", help="disable a user and end their sessions")
    disable.add_argument("email")
    for sub in (create, listing, reset, disable):
        _add_setting_flags(sub)


async def _users(config: Config, args: argparse.Namespace) -> None:
    base_url = config.console.public_url or f"http://{config.http.host}:{config.http.port}"
    hours = config.console.link_hours
    mailer = Mailer.from_config(config.console)

    async def hand_over(user: console_users.UserRow, url: str, *, reset: bool) -> None:
        """Mail the link when SMTP is set (and it goes through), else print it."""
        if await accounts.mail_link(mailer, user, url, reset=reset):
            say(f"{'password' if reset else 'invitation'} link mailed to {user.email}")
        else:
            say(
                f"{'password' if reset else 'invitation'} link (works once, for {hours:g} h): {url}"
            )

    async def create(db: asyncpg.Connection[asyncpg.Record]) -> None:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        if password is not None:
            check_policy(password, email=args.email)
        client = args.client if args.role != "operator" else None
        async with db.transaction():
            try:
                user, url = await accounts.invite(
                    db,
                    client_id=client,
                    email=args.email,
                    name=args.name,
                    role=args.role,
                    now=datetime.now(UTC),
                    hours=hours,
                    base_url=base_url,
                    actor="cli",
                )
            except StoreConflict:
                raise AccountError("email", f"a user has {args.email} already") from None
            if password is not None:
                await console_users.update(
                    db, user.id, client, password_hash=Passwords().hash_now(password)
                )
                await console_users.spend_link(db, token_hash(token_of(url)), datetime.now(UTC))
        say(f"created {user.role} user {user.id} {user.email}")
        if password is None:
            await hand_over(user, url, reset=False)

    async def listing(db: asyncpg.Connection[asyncpg.Record]) -> None:
        for user in await console_users.list_users(db, args.client):
            state = (
                "disabled" if user.disabled_at else "active" if user.password_hash else "invited"
            )
            two_factor = "2fa" if user.totp_secret else "-"
            owner = user.client_id or "operator"
            say(f"{user.id}  {user.email}  {user.role}  {owner}  {state}  {two_factor}")

    async def reset(db: asyncpg.Connection[asyncpg.Record]) -> None:
        user = await console_users.by_email(db, accounts.normal_email(args.email))
        if user is None:
            raise ConfigError(f"no console user {args.email}")
        await console_users.login_succeeded(db, user.id)
        url = await accounts.reset_link(
            db, user, now=datetime.now(UTC), hours=hours, base_url=base_url, actor="cli"
        )
        await hand_over(user, url, reset=True)

    async def disable(db: asyncpg.Connection[asyncpg.Record]) -> None:
        user = await console_users.by_email(db, accounts.normal_email(args.email))
        if user is None:
            raise ConfigError(f"no console user {args.email}")
        await console_users.update(db, user.id, None, disabled_at=datetime.now(UTC))
        ended = await console_session_rows.delete_for_user(db, user.id)
        await console_audit.insert(
            db, client_id=user.client_id, actor="cli", action="user.disabled", target=user.email
        )
        say(f"disabled {user.email}; ended {ended} session(s)")

    actions = {"create": create, "list": listing, "reset-password": reset, "disable": disable}
    await _with_connection(config, actions[args.users_command])


async def _backup(config: Config, args: argparse.Namespace) -> None:
    check_targets(args.target, args.keys_dir)
    async with database_dsn(config, lambda _line: None, owner=False) as dsn:
        await take_backup(config, dsn, args.target, args.keys_dir, say)


async def _restore(config: Config, args: argparse.Namespace) -> None:
    """The one command besides serve that makes a database: a fresh one, from the backup."""
    await asyncio.to_thread(check_restorable, config, args.source, args.keys_dir)
    with DataDirectoryLock(config.data_dir):
        async with database_dsn(config, say, owner=True) as dsn:
            await restore_backup(config, dsn, args.source, args.keys_dir, say)
            await migrate_database(dsn, say)
    say("restore: done; start `callrouter serve` with the same configuration")


HEALTH_TIMEOUT = 4.0
"""Seconds ``callrouter health`` waits (Docker's check gives up after 5)."""


async def _health(config: Config) -> None:
    """GET /v1/health on the address serve listens on (its loopback when bound to all)."""
    if config.http.port == 0:
        raise ConfigError("http.port: 0 (a free port) cannot be checked; configure the port")
    host = {
        "0.0.0.0": "127.0.0.1",  # noqa: S104 (a wildcard, read)
        "::": "::1",
        "": "127.0.0.1",
    }.get(config.http.host, config.http.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{config.http.port}/v1/health"
    timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
            body = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise HealthCheckFailed(f"{url}: {exc or type(exc).__name__}") from None
    if reply.status != 200:
        raise HealthCheckFailed(f"{url}: {reply.status} {body}")
    # Alive is what a container health check asks: a database outage shows as "degraded"
    # (and in /v1/ready), and restarting this process would not end it.
    say(f"{url}: {body.get('status')}")


def _check_dialplans(files: list[Path]) -> int:
    """Print each file's verdict; exit status 1 when any is refused."""
    failed = 0
    for path in files:
        try:
            plan = load_dialplan(path)
        except DialplanError as exc:
            print(f"{exc}", file=sys.stderr)
            failed += 1
            continue
        say(f"{path}: ok, {len(plan.steps)} steps, timezone {plan.timezone.key}")
    return 1 if failed else 0


async def _explain(config: Config, args: argparse.Namespace) -> None:
    library = DialplanLibrary(config.dialplans_dir, lambda _line: None)
    library.refresh()
    e164 = to_e164(args.number)

    async def show(db: asyncpg.Connection[asyncpg.Record]) -> None:
        number = await numbers.find_by_e164(db, e164)
        if number is None:
            raise ConfigError(f"{e164} is not a tracking number here (a carrier would get 404)")
        plan = library.get(number.dialplan)
        if plan is None:
            problem = library.errors.get(number.dialplan, "no such file")
            raise ConfigError(f"dialplan {number.dialplan!r} is not loaded: {problem}")
        params = {k: str(v) for k, v in number.dialplan_params.items()}
        if number.destination:
            params.setdefault("destination", number.destination)
        say(f"{e164}: client {number.client_id}, dialplan {plan.name}")
        at = args.at or datetime.now(UTC)
        for line in explain_plan(plan, at, args.caller, params):
            say(line)

    await _with_connection(config, show)


VAULT_KEY_ROTATED = "vault.key_rotated"
"""Audit action: a new key-encryption key is current (the first one, when the ring is made)."""
VAULT_REWRAPPED = "vault.rewrapped"
"""Audit action: data keys were re-wrapped under the current key-encryption key."""


async def _vault(config: Config, args: argparse.Namespace) -> None:
    """``status`` reads files only. ``rotate`` and ``rewrap`` change keys: they open the
    database first, as the privacy commands do, and audit each change as soon as it is made;
    a database that cannot be reached stops them before any key changes."""
    if args.vault_command == "status":
        await asyncio.to_thread(_vault_status, config)
        return
    steps: list[tuple[str, Callable[[Config], dict[str, int]]]] = []
    if args.vault_command == "rotate":
        steps.append((VAULT_KEY_ROTATED, _vault_rotate))
    if args.vault_command == "rewrap" or args.rewrap:
        steps.append((VAULT_REWRAPPED, _vault_rewrap))

    connected = False

    async def run(db: asyncpg.Connection[asyncpg.Record]) -> None:
        nonlocal connected
        connected = True
        for action, step in steps:
            counts = await asyncio.to_thread(step, config)  # blocking file and crypto work
            await audit.record(
                db, at=datetime.now(UTC), actor=audit.CLI, action=action, counts=counts
            )

    try:
        await _with_connection(config, run)
    except (OSError, asyncpg.PostgresError) as exc:
        if connected:
            raise
        raise VaultError(
            f"no key was changed: the database, where key changes are audited, cannot be "
            f"reached: {exc}"
        ) from exc


def _vault_status(config: Config) -> None:
    status = Vault.from_config(config, create=False).status()
    say(f"key ring: {status.key_ring}")
    say(f"key store: {status.keys_dir} ({_data_keys(status.data_keys)})")
    for kek in status.keks:
        mark = "current" if kek.current else ""
        say(f"  {kek.id}  {mark:7}  {_data_keys(kek.data_keys)}")
    for kek_id, count in status.missing_keks.items():
        say(f"  {kek_id}  MISSING from the key ring: {_data_keys(count)} cannot be opened")


def _vault_rotate(config: Config) -> dict[str, int]:
    """A new current key-encryption key (the first, when there is no key ring); the audit
    counts: keys in the ring, and data keys (all still wrapped under older ones)."""
    key_ring, _keys_dir = vault_paths(config)
    existed = key_ring.exists()
    vault = Vault.from_config(config)
    if existed:
        previous = vault.key_ring.current.id
        say(f"vault: {vault.rotate()} is now the current key-encryption key (was {previous})")
    else:
        say(f"vault: created {key_ring} with {vault.key_ring.current.id}")
    status = vault.status()
    return {"key_encryption_keys": len(status.keks), "data_keys": status.data_keys}


def _vault_rewrap(config: Config) -> dict[str, int]:
    """Re-wrap the data keys under older key-encryption keys; the audit counts."""
    vault = Vault.from_config(config)
    count = vault.rewrap()
    say(f"vault: re-wrapped {_data_keys(count)} under {vault.key_ring.current.id}")
    return {"data_keys": count}


def _data_keys(count: int) -> str:
    return f"{count} data key{'' if count == 1 else 's'}"


def _add_privacy_commands(commands: Any) -> None:
    purge = commands.add_parser(
        "purge", help="remove what is past its retention period (serve does it daily)"
    )
    purge.add_argument("--dry-run", action="store_true", help="only show what would go")
    purge.add_argument("--client", type=UUID, help="only this client")
    _add_setting_flags(purge)

    privacy = commands.add_parser("privacy", help="data subjects' requests (GDPR)")
    actions = privacy.add_subparsers(dest="privacy_command", required=True, metavar="ACTION")
    helps = {
        "erase": "erase everything held about a caller, call or visit (prints a receipt)",
        "export": "write everything held about a caller, call or visit to a zip",
        "object": "put a number on the suppression list: never recorded, attributed or stored",
        "withdraw-consent": "never record calls from a number again",
    }
    for name, text in helps.items():
        action = actions.add_parser(name, help=text)
        action.add_argument("--client", type=UUID, required=True, help="the client's id")
        subject = action.add_mutually_exclusive_group(required=True)
        subject.add_argument("--phone", help="the caller's number, +44 7700 900123")
        if name in ("erase", "export"):
            subject.add_argument("--call", type=UUID, help="a call id")
            subject.add_argument("--session", type=UUID, help="a visitor session id")
        action.add_argument(
            "--received", type=_timestamp, help="when the request reached you (default: now)"
        )
        if name == "export":
            action.add_argument("--out", type=Path, required=True, help="the zip to write")
        _add_setting_flags(action)
    listing = actions.add_parser("requests", help="the request register")
    listing.add_argument("--client", type=UUID, help="only this client's")
    listing.add_argument("--status", choices=("open", "overdue", "done"))
    _add_setting_flags(listing)


async def _purge(config: Config, args: argparse.Namespace) -> None:
    async def run(db: asyncpg.Connection[asyncpg.Record]) -> None:
        rights = await PrivacyRights.open(db, config, say=say)
        report = await rights.purge(dry_run=args.dry_run, actor=audit.CLI, client_id=args.client)
        for client in report.clients:
            counts = ", ".join(f"{n} {k}" for k, n in client.removed.counts().items() if n)
            say(f"client {client.client_id}: {counts}")
        say(report.summary())
        if report.shredding == "queued":
            say(_QUEUED)

    await _with_connection(config, run)


_QUEUED = (
    "recordings: their keys and files are queued for destruction; the server destroys them "
    "(now if it is running, else when it next starts)"
)


def _subject_of(args: argparse.Namespace) -> Subject:
    if args.phone is not None:
        return Subject.phone(args.phone)
    if getattr(args, "call", None) is not None:
        return Subject.call(args.call)
    return Subject.session(args.session)


async def _privacy(config: Config, args: argparse.Namespace) -> None:
    async def run(db: asyncpg.Connection[asyncpg.Record]) -> None:
        rights = await PrivacyRights.open(db, config, say=say)
        if args.privacy_command == "requests":
            await _list_requests(db, rights, args)
            return
        if not await db.fetchval("SELECT 1 FROM clients WHERE id = $1", args.client):
            raise ConfigError(f"no client {args.client}")
        subject = _subject_of(args)
        kinds: dict[str, RequestKind] = {
            "erase": "erasure",
            "export": "access",
            "object": "objection",
            "withdraw-consent": "consent_withdrawal",
        }
        request = await rights.file(
            args.client,
            kinds[args.privacy_command],
            subject,
            actor=audit.CLI,
            received_at=args.received,
        )
        if args.privacy_command == "export":
            request = await _export(rights, request, subject, args.out)
        outcome = request.outcome or {}
        say(f"{request.kind} request {request.id}: {request.status}, due {request.due_at:%Y-%m-%d}")
        for name, value in {**outcome.get("receipt", {}), **outcome.get("export", {})}.items():
            say(f"  {name}: {value}")
        for notice in outcome.get("notices", []):
            say(f"notice: {notice}")
        if outcome.get("shredding") == "queued":
            say(_QUEUED)

    await _with_connection(config, run)


async def _export(rights: PrivacyRights, request: Any, subject: Subject, out: Path) -> Any:
    """Write the export to ``out`` (created private: it is personal data); no half files."""
    file = await asyncio.to_thread(_private_file, out)
    try:
        with file:

            async def write(chunk: bytes) -> None:
                await asyncio.to_thread(file.write, chunk)

            request = await rights.export(request, subject, write, actor=audit.CLI)
    except BaseException:
        await asyncio.to_thread(out.unlink, missing_ok=True)
        raise
    say(f"export: wrote {out}")
    return request


def _private_file(path: Path) -> BinaryIO:
    """A new file only this account can read; an existing one is never overwritten."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


async def _list_requests(
    db: asyncpg.Connection[asyncpg.Record], rights: PrivacyRights, args: argparse.Namespace
) -> None:
    after = None
    now = rights.clock()
    while page := await privacy_store.list_requests(
        db, None, client_id=args.client, status=args.status, now=now, after=after, limit=200
    ):
        for r in page:
            late = "  OVERDUE" if r.status == "open" and r.due_at < now else ""
            say(
                f"{r.id}  {r.client_id}  {r.kind:18} {r.subject_kind:7} received "
                f"{r.received_at:%Y-%m-%d} due {r.due_at:%Y-%m-%d}  {r.status}{late}"
            )
        after = page[-1].id


async def _probe(config: Config, args: argparse.Namespace) -> int:
    """Exit status 1, with the reason in the report, when anything about the call failed."""
    try:
        from callrouter.probe.run import probe  # noqa: PLC0415 - pjsua2 is an optional extra
    except ImportError as exc:
        raise ConfigError(
            f"callrouter probe needs pjsua2 ({exc}): pip install 'callrouter[probe]'"
        ) from None
    host = config.sip.host if config.sip.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104 - compared, not bound
    outcome = []

    async def run(db: asyncpg.Connection[asyncpg.Record]) -> None:
        outcome.append(
            await probe(
                db,
                args.number,
                router=(host, config.sip.port),
                local_host=args.local_host,
                answer=args.answer,
                ring_timeout=args.ring_timeout,
            )
        )

    await _with_connection(config, run)
    report = outcome[0]
    if args.json:
        print(json.dumps(report.as_json(), default=str), flush=True)
    else:
        for line in report.lines():
            say(line)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dialplan" and args.dialplan_command == "check":
        return _check_dialplans(args.files)
    try:
        config = _config_from(args)
        logs.configure(config.log)
        commands: dict[str, Callable[[], Any]] = {
            "serve": lambda: _serve(config),
            "migrate": lambda: _migrate(config),
            "keys": lambda: _keys(config, args),
            "dialplan": lambda: _explain(config, args),
            "vault": lambda: _vault(config, args),
            "purge": lambda: _purge(config, args),
            "privacy": lambda: _privacy(config, args),
            "users": lambda: _users(config, args),
            "backup": lambda: _backup(config, args),
            "restore": lambda: _restore(config, args),
            "health": lambda: _health(config),
            "probe": lambda: _probe(config, args),
        }
        # uvloop: +57 % API throughput in bench/api.py on the reference machine.
        code = uvloop.run(commands[args.command]())
    except EXPECTED_FAILURES as exc:
        print(f"callrouter: error: {exc}", file=sys.stderr)
        if isinstance(exc, ConfigError):  # a setting or a place: say which file was read
            print(f"callrouter: {_config_searched(args)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return code if isinstance(code, int) else 0
