"""``callrouter backup`` and ``callrouter restore``: the data in one place, the keys in another.

    DIR/                       the data; keep it as long as your backup policy says
      manifest.json
      database.dump            pg_dump --format=custom: one consistent snapshot, taken online
      recordings/              the encrypted recording files as they are (never decrypted)
    KEYS/                      the keys (``--keys-dir``); keep it somewhere else, short-lived
      manifest.json
      keyring.json             the key-encryption keys
      keys/<uuid>.key          each recording's data key, still wrapped
      privacy-secret           the secret that keys subject hashes (suppression list)

Erasure reaches the backups because audio in DIR is noise without its data key: restored with
the live key store, a recording crypto-shredded after the backup was taken stays unreadable,
and restore drops its row. KEYS is for the day the key store itself is lost; restoring it
brings back recordings erased since it was taken, which is why its copies should expire fast.

The order of a backup is the database, then the recordings, then the keys: every recording
row in the snapshot had its data key before the snapshot, so the keys copied after it cover
them all (except those shredded meanwhile, which is the point).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import asyncpg

from callrouter import __version__
from callrouter.config import Config
from callrouter.privacy.ledger import ledger_path
from callrouter.privacy.rights import PrivacyRights
from callrouter.privacy.secret import secret_path
from callrouter.store import backup as store
from callrouter.store.database import connect
from callrouter.store.embedded import EmbeddedPostgres, binaries_dir
from callrouter.vault import KeyRing, KeyStore, Vault, vault_paths
from callrouter.vault.durable import durable_files, private_directory, write_atomically

Say = Callable[[str], None]

FORMAT = "callrouter backup"
VERSION = 1
MANIFEST = "manifest.json"
DUMP = "database.dump"
RECORDINGS = "recordings"
KEY_RING = "keyring.json"
KEYS = "keys"
SECRET_FILE = "privacy-secret"  # noqa: S105 (a file name)
PROGRESS_EVERY = 100
"""Recording files between two progress lines."""
LEDGER_MARGIN = timedelta(minutes=5)
DUMP_TIMEOUT = 3600.0
"""Seconds pg_dump or pg_restore may take before the command gives up."""


CONNECT_TIMEOUT = "10"
"""Seconds pg_dump and pg_restore wait for the server (unless PGCONNECT_TIMEOUT says)."""


class BackupError(Exception):
    """A backup or restore refused to start, or failed; the message says what to do."""


@dataclass(frozen=True)
class Manifest:
    """What a backup (or its keys) holds, written last so a half backup has none."""

    format: str
    """Always ``callrouter backup``."""
    version: int
    """The layout version of this file tree."""
    part: str
    """``data`` (DIR) or ``keys`` (KEYS)."""
    taken_at: str
    """When the backup started (ISO 8601, UTC)."""
    callrouter: str
    """The version that took it."""
    recordings: int
    """Recording files (data) or data keys (keys) it holds."""


def _write_manifest(directory: Path, part: str, taken_at: datetime, count: int) -> None:
    manifest = Manifest(FORMAT, VERSION, part, taken_at.isoformat(), __version__, count)
    write_atomically(directory / MANIFEST, json.dumps(asdict(manifest), indent=2).encode())


def read_manifest(directory: Path, part: str) -> Manifest:
    """The manifest of a finished backup part.

    :raises BackupError: there is none (an unfinished backup), or it is not ours.
    """
    try:
        data = json.loads((directory / MANIFEST).read_text())
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(
            f"{directory}: not a finished callrouter backup ({MANIFEST}: {exc})"
        ) from None
    if manifest.format != FORMAT or manifest.version != VERSION or manifest.part != part:
        raise BackupError(
            f"{directory}: {manifest.format} v{manifest.version} ({manifest.part}) is not a "
            f"{FORMAT} v{VERSION} {part} part"
        )
    return manifest


def _fresh_target(path: Path, what: str) -> None:
    """Backups never overwrite: the target must be missing or empty."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{what} {path} exists and is not empty; choose a new directory")


def check_targets(target: Path, keys_target: Path) -> None:
    """Refuse a target that is not empty, or keys nested with the data."""
    data, keys = target.resolve(), keys_target.resolve()
    if data == keys or data in keys.parents or keys in data.parents:
        raise BackupError(
            f"--keys-dir {keys_target} must not be inside {target} (or contain it): the keys "
            "must not sit beside the data they protect"
        )
    _fresh_target(target, "backup directory")
    _fresh_target(keys_target, "--keys-dir")


async def _run(args: list[str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # libpq waits forever for a server that does not answer unless told otherwise.
        env={"PGCONNECT_TIMEOUT": CONNECT_TIMEOUT, **os.environ},
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), DUMP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BackupError(f"{what} took longer than {DUMP_TIMEOUT:.0f} s") from None
    if process.returncode != 0:
        raise BackupError(f"{what} failed: {stderr.decode(errors='replace').strip()}")


def _copy_recordings(source: Path, target: Path, say: Say, verb: str) -> int:
    """Copy every file under ``source`` (encrypted; copied as is) into ``target``, 0700."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    private_directory(target, create=True)
    copies = []
    size = 0
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            shutil.copy2(path, destination)
        except FileNotFoundError:
            continue  # shredded while we copied: it is meant to be gone
        copies.append(destination)
        size += destination.stat().st_size
        if len(copies) % PROGRESS_EVERY == 0:
            say(f"{verb}: recordings {len(copies)}/{len(files)} files")
    durable_files(copies)
    say(f"{verb}: recordings {len(copies)} files, {size / 1e6:.1f} MB")
    return len(copies)


async def take_backup(config: Config, dsn: str, target: Path, keys_target: Path, say: Say) -> None:
    """Back up the database behind ``dsn``, the recordings and (to ``keys_target``) the keys.

    :raises BackupError: a target is not empty or is nested in the other; pg_dump failed.
    """
    check_targets(target, keys_target)
    taken_at = datetime.now(UTC)
    await asyncio.to_thread(private_directory, target, create=True)
    dump = target / DUMP
    say(f"backup: dumping the database to {dump}")
    await _run(
        [
            str(binaries_dir() / "pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--file={dump}",
            f"--dbname={dsn}",
        ],
        "pg_dump",
    )
    say(f"backup: database {dump.stat().st_size / 1e6:.1f} MB")
    copied = await asyncio.to_thread(
        _copy_recordings, config.recordings_dir, target / RECORDINGS, say, "backup"
    )

    say(f"backup: keys to {keys_target}")
    keys = await asyncio.to_thread(_copy_keys_out, config, keys_target)
    await asyncio.to_thread(_write_manifest, keys_target, "keys", taken_at, keys)
    # Last: a backup whose keys could not be written is not finished.
    await asyncio.to_thread(_write_manifest, target, "data", taken_at, copied)
    say(f"backup: {keys} data keys, the key ring and the privacy secret")
    say(f"backup: done: {target} (data), {keys_target} (keys, keep them apart)")


def _copy_keys_out(config: Config, keys_target: Path) -> int:
    private_directory(keys_target, create=True)
    vault = Vault.from_config(config, create=False)
    vault.key_ring.copy_to(keys_target / KEY_RING)
    count = vault.key_store.copy_to(keys_target / KEYS)
    secret = secret_path(config)
    if secret.exists():
        write_atomically(keys_target / SECRET_FILE, secret.read_bytes())
    return count


def check_restorable(config: Config, source: Path, keys_from: Path | None) -> None:
    """Everything a restore needs, checked before it creates anything.

    :raises BackupError: the backup is unfinished; the data directory, recordings directory
        or key paths already hold data; no key store to decrypt with.
    """
    read_manifest(source, "data")
    if not config.database.url and EmbeddedPostgres.exists(config.data_dir / "postgres"):
        raise BackupError(
            f"{(config.data_dir / 'postgres').resolve()} already holds a database: restore "
            "into a fresh data directory (--data-dir)"
        )
    _fresh_target(config.recordings_dir, "recordings directory")
    key_ring, keys_dir = vault_paths(config)
    if keys_from is None:
        if not key_ring.exists():
            raise BackupError(
                f"no key ring at {key_ring}: point [vault] key_ring and keys_dir at the live "
                "key store, or restore the keys backup with --keys-dir"
            )
        _check_key_store(source, keys_dir)
        return
    read_manifest(keys_from, "keys")
    if key_ring.exists():
        raise BackupError(f"{key_ring} exists: --keys-dir restores into an empty key store only")
    _fresh_target(keys_dir, "key store")
    if secret_path(config).exists():
        raise BackupError(f"{secret_path(config)} exists: --keys-dir would replace it")


def _check_key_store(source: Path, keys_dir: Path) -> None:
    """A key store holding none of the backup's keys is the wrong one (a mistyped keys_dir),
    not one where everything was erased: refuse it before restore drops every recording."""
    files = (source / RECORDINGS).glob("*") if (source / RECORDINGS).is_dir() else []
    in_backup = {_recording_of(path) for path in files} - {None}
    held = {_recording_of(path) for path in keys_dir.glob("*.key")} if keys_dir.is_dir() else set()
    if in_backup and not in_backup & held:
        raise BackupError(
            f"the key store {keys_dir} holds none of the keys of the {len(in_backup)} "
            f"recordings in {source}: is [vault] keys_dir the live key store? Nothing was "
            "restored"
        )


def _recording_of(path: Path) -> UUID | None:
    """The recording a file (``<uuid>.flac``, ``<uuid>.key``, ...) belongs to, if any."""
    try:
        return UUID(path.name.split(".", 1)[0])
    except ValueError:
        return None


async def restore_backup(
    config: Config, dsn: str, source: Path, keys_from: Path | None, say: Say
) -> None:
    """Restore ``source`` into the empty database behind ``dsn`` and the configured
    directories; keys from ``keys_from`` or, when None, the live key store.

    Call :func:`check_restorable` first.
    :raises BackupError: the database is not empty; pg_restore failed.
    """
    connection = await asyncpg.connect(dsn)
    try:
        if not await store.is_empty(connection):
            raise BackupError("the target database is not empty: restore into an empty one")
    finally:
        await connection.close()
    say(f"restore: database from {source / DUMP}")
    await _run(
        [
            str(binaries_dir() / "pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={dsn}",
            str(source / DUMP),
        ],
        "pg_restore",
    )
    await asyncio.to_thread(
        _copy_recordings, source / RECORDINGS, config.recordings_dir, say, "restore"
    )
    if keys_from is not None:
        count = await asyncio.to_thread(_copy_keys_in, config, keys_from)
        say(f"restore: {count} data keys, the key ring and the privacy secret from {keys_from}")
    elif not secret_path(config).exists():
        say(
            f"restore: WARNING: no privacy secret at {secret_path(config)}: serve will make a "
            "new one and no suppressed number will be recognised; copy the old one there"
        )
    await _drop_shredded(config, dsn, say)
    taken_at = datetime.fromisoformat(read_manifest(source, "data").taken_at)
    await _repeat_rights(config, dsn, taken_at, say)


def _copy_keys_in(config: Config, keys_from: Path) -> int:
    key_ring, keys_dir = vault_paths(config)
    ring = KeyRing.open(keys_from / KEY_RING, create=False)
    ring.copy_to(key_ring)
    count = KeyStore(keys_from / KEYS, ring, create=False).copy_to(keys_dir)
    secret = keys_from / SECRET_FILE
    if secret.exists():
        target = secret_path(config)
        private_directory(target.parent, create=True)
        write_atomically(target, secret.read_bytes())
    return count


async def _drop_shredded(config: Config, dsn: str, say: Say) -> None:
    """Recordings whose data key is no longer in the key store were erased after the backup
    was taken: drop their rows (serve then deletes their files), say how many."""
    vault = await asyncio.to_thread(Vault.from_config, config, create=False)
    connection = await asyncpg.connect(dsn)
    try:
        ids = await store.recording_ids(connection)
        held = set(await asyncio.to_thread(vault.key_store.recording_ids))
        gone = [recording_id for recording_id in ids if recording_id not in held]
        if gone:
            await store.forget_recordings(connection, gone)
            say(
                f"restore: {len(gone)} recording(s) were crypto-shredded after this backup was "
                "taken: their keys are gone, so their rows are dropped and their files deleted"
            )
        say(f"restore: {len(ids) - len(gone)} recording(s) restored with their keys")
    finally:
        await connection.close()


async def _repeat_rights(config: Config, dsn: str, taken_at: datetime, say: Say) -> None:
    """Erasures and objections made after the backup was taken are in the rights ledger, not
    in the restored database: carry them out again (``privacy.ledger``)."""
    ledger = ledger_path(config)
    if not ledger.exists():
        return
    if not secret_path(config).exists():
        say(
            f"restore: WARNING: the rights ledger {ledger} cannot be read without the privacy "
            "secret: erasures and objections made after the backup are not repeated"
        )
        return
    connection = await connect(dsn)  # with the JSON codecs the audit record needs
    try:
        rights = await PrivacyRights.open(connection, config, say=say)
        # A few minutes' margin for the clocks of other nodes: repeating is idempotent.
        done = await rights.replay(taken_at - LEDGER_MARGIN)
    finally:
        await connection.close()
    say(
        f"restore: rights ledger: {done['erasures']} erasure(s) and {done['suppressions']} "
        "objection(s) made after this backup was taken carried out again"
        + (
            f"; {done['not_found']} erased number(s) not among the restored callers"
            if done["not_found"]
            else ""
        )
    )


__all__ = [
    "BackupError",
    "Manifest",
    "check_restorable",
    "check_targets",
    "read_manifest",
    "restore_backup",
    "take_backup",
]
