"""The ``callrouter`` command: serve, migrate, keys.

Every command takes ``--config FILE`` and one flag per setting (see ``callrouter serve --help``);
flags override ``CALLROUTER_*`` variables, which override the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import uvloop

from callrouter import __version__
from callrouter.app import database_dsn, migrate_database, serve
from callrouter.config import CONFIG_PATH_ENV, SETTINGS, Config, ConfigError, load_config
from callrouter.instance_lock import DataDirectoryInUse
from callrouter.store import api_keys
from callrouter.store.api_keys import API_KEYS
from callrouter.store.embedded import EmbeddedPostgresError
from callrouter.store.migrations import MigrationError

EXPECTED_FAILURES = (
    ConfigError,
    DataDirectoryInUse,
    EmbeddedPostgresError,
    MigrationError,
    OSError,
    asyncpg.PostgresError,
)


def say(line: str) -> None:
    print(line, flush=True)


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
    path = args.config or (
        Path(os.environ[CONFIG_PATH_ENV]) if CONFIG_PATH_ENV in os.environ else None
    )
    return load_config(path, os.environ, flags)


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
    create.add_argument("--client", type=UUID, help="client id (omit for an operator key)")
    create.add_argument("--name", default="", help="what the key is for")
    listing = key_commands.add_parser("list", help="list keys")
    listing.add_argument("--client", type=UUID, help="only this client's keys")
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", type=UUID)
    for sub in (create, listing, revoke):
        _add_setting_flags(sub)
    return parser


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(config, say, stop)


async def _migrate(config: Config) -> None:
    async with database_dsn(config, say, owner=False) as dsn:
        await migrate_database(dsn, say)
        say("database: schema is up to date")


async def _with_connection(
    config: Config, action: Callable[[asyncpg.Connection[asyncpg.Record]], Awaitable[None]]
) -> None:
    async with database_dsn(config, lambda _line: None, owner=False) as dsn:
        await migrate_database(dsn, lambda _line: None)
        connection = await asyncpg.connect(dsn)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = _config_from(args)
        commands: dict[str, Callable[[], Any]] = {
            "serve": lambda: _serve(config),
            "migrate": lambda: _migrate(config),
            "keys": lambda: _keys(config, args),
        }
        # uvloop: +57 % API throughput in bench/api.py on the reference machine.
        uvloop.run(commands[args.command]())
    except EXPECTED_FAILURES as exc:
        print(f"callrouter: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0
