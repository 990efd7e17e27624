"""The key store: each recording's data key, wrapped by a KEK, in a small file of its own.

    <keys_dir>/<recording-uuid>.key   (mode 0600, directory 0700)

    {"format": "callrouter data key", "version": 1, "recording_id": "<uuid>",
     "key_id": "<32 hex>", "kek_id": "kek-5e6f7a8b", "nonce": "<base64>", "wrapped": "<base64>"}

The data key is wrapped with AES-256-GCM under the named KEK; the recording id, key id and KEK id
are its associated data, so an entry copied to another recording's name does not open. The store
lives apart from the audio (and from the audio's backups): shredding an entry makes every copy of
that recording's files unreadable.

Writers (create, re-wrap, shred) take an exclusive lock on ``<keys_dir>/.lock`` and readers a
shared one, so a re-wrap running beside the server can never bring back a key shredded meanwhile,
and nobody reads an entry while it is being overwritten.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callrouter.vault.durable import (
    durable_files,
    fsync_directory,
    locked,
    private_directory,
    write_all,
    write_atomically,
)
from callrouter.vault.errors import KeyStoreError, NoDataKey
from callrouter.vault.keyring import Kek, KeyRing
from callrouter.vault.stream import KEY_ID_BYTES

__all__ = ["DataKey", "KeyEntry", "KeyStore"]

ENTRY_FORMAT = "callrouter data key"
ENTRY_VERSION = 1
DATA_KEY_BYTES = 32
WRAP_NONCE_BYTES = 12
_WRAP_CONTEXT = b"callrouter data key v1\x00"


@dataclass(frozen=True)
class DataKey:
    """A recording's data key, unwrapped (it lives only in memory)."""

    recording_id: UUID
    """The recording it belongs to."""
    key_id: bytes
    """Random id written into the header of every file the key seals."""
    key: bytes = field(repr=False)
    """The 256-bit AES-GCM key."""


@dataclass(frozen=True)
class KeyEntry:
    """What a key-store file holds: a data key still wrapped."""

    recording_id: UUID
    """The recording the key belongs to."""
    key_id: bytes
    """The data key's id."""
    kek_id: str
    """The KEK that wrapped it."""
    nonce: bytes
    """The AES-GCM nonce of the wrapping."""
    wrapped: bytes
    """The data key encrypted under the KEK, with its tag."""

    def associated_data(self) -> bytes:
        """What the wrapping authenticates besides the key: whose key it is, under which KEK."""
        return _WRAP_CONTEXT + self.recording_id.bytes + self.key_id + self.kek_id.encode()


class KeyStore:
    """The wrapped data keys, one file per recording."""

    def __init__(self, directory: Path, key_ring: KeyRing, *, create: bool = True) -> None:
        """:param directory: the key store (created with mode 0700 unless ``create`` is false).
        :param key_ring: the KEKs that wrap and unwrap.
        :raises KeyStoreError: the directory is open to group or others.
        """
        self.directory = directory
        self.key_ring = key_ring
        mode = private_directory(directory, create=create)
        if mode is not None and mode & 0o077:
            raise KeyStoreError(
                f"{directory}: mode {mode:04o} lets group or others at the key store; "
                f"refusing to use it (chmod 700 {directory})"
            )

    def create(self, recording_id: UUID) -> DataKey:
        """Make and store a new data key for ``recording_id``; keep the one it already has."""
        with locked(self._lock_file):
            entry = self._read(recording_id)
            if entry is not None:
                return self._unwrap(entry)
            key = DataKey(recording_id, secrets.token_bytes(KEY_ID_BYTES), _new_data_key())
            self._write(self._wrap(key, self.key_ring.current))
            return key

    def get(self, recording_id: UUID) -> DataKey:
        """The data key of ``recording_id``.

        :raises NoDataKey: shredded or never created.
        :raises KeyStoreError: the entry is malformed or fails authentication.
        :raises KeyRingError: the KEK that wrapped it is not in the ring.
        """
        if not self.directory.is_dir():
            raise NoDataKey(recording_id)
        with locked(self._lock_file, shared=True):
            entry = self._read(recording_id)
        if entry is None:
            raise NoDataKey(recording_id)
        return self._unwrap(entry)

    def shred(self, recording_id: UUID) -> bool:
        """Destroy the data key of ``recording_id``: overwrite its entry, unlink it, fsync.

        Overwriting is best effort (copy-on-write file systems and SSDs may keep the old
        blocks); what makes a stray old copy of the entry useless is retiring the KEK it was
        wrapped under after a rotation and re-wrap.

        :returns: whether there was a key to destroy.
        """
        if not self.directory.is_dir():
            return False
        path = self._path(recording_id)
        with locked(self._lock_file):
            # Temp files left by a crash mid-write hold the same wrapped key.
            leftovers = list(self.directory.glob(f".{path.name}.*.tmp"))
            existed = path.exists()
            for victim in [path, *leftovers] if existed else leftovers:
                _overwrite(victim)
                victim.unlink()
            if existed or leftovers:
                fsync_directory(self.directory)
        return existed

    def rewrap(self) -> int:
        """Re-wrap every data key not under the current KEK under it; audio is not touched.

        :returns: how many entries were re-wrapped.
        """
        current = self.key_ring.current
        count = 0
        for recording_id in self.recording_ids():
            # One entry per lock hold, so the server's creates and shreds go on meanwhile.
            with locked(self._lock_file):
                entry = self._read(recording_id)
                if entry is None or entry.kek_id == current.id:
                    continue
                self._write(self._wrap(self._unwrap(entry), current))
                count += 1
        return count

    def recording_ids(self) -> list[UUID]:
        """The recordings that have a data key."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob("*.key"):
            try:
                found.append(UUID(path.stem))
            except ValueError:
                continue  # not ours: the store only ever writes <uuid>.key
        return sorted(found)

    def entry(self, recording_id: UUID) -> KeyEntry | None:
        """The stored entry of ``recording_id`` without unwrapping it (None when there is none)."""
        if not self.directory.is_dir():
            return None
        with locked(self._lock_file, shared=True):
            return self._read(recording_id)

    def kek_usage(self) -> dict[str, int]:
        """How many data keys each KEK wraps (KEK ids as the entries name them)."""
        usage: dict[str, int] = {}
        for recording_id in self.recording_ids():
            entry = self.entry(recording_id)
            if entry is not None:
                usage[entry.kek_id] = usage.get(entry.kek_id, 0) + 1
        return usage

    def copy_to(self, target: Path) -> int:
        """Copy every entry, as they are (still wrapped), into the directory ``target``
        (mode 0700, created): backups. Under the shared lock, so no entry is copied half
        re-wrapped and no shredded one comes back. Returns how many were copied."""
        private_directory(target, create=True)
        copies = []
        with locked(self._lock_file, shared=True):
            for recording_id in self.recording_ids():
                path = self._path(recording_id)
                copy = target / path.name
                fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    write_all(fd, path.read_bytes())
                finally:
                    os.close(fd)
                copies.append(copy)
        durable_files(copies)
        return len(copies)

    @property
    def _lock_file(self) -> Path:
        return self.directory / ".lock"

    def _path(self, recording_id: UUID) -> Path:
        return self.directory / f"{recording_id}.key"

    def _wrap(self, key: DataKey, kek: Kek) -> KeyEntry:
        nonce = secrets.token_bytes(WRAP_NONCE_BYTES)
        entry = KeyEntry(key.recording_id, key.key_id, kek.id, nonce, b"")
        wrapped = AESGCM(kek.key).encrypt(nonce, key.key, entry.associated_data())
        return KeyEntry(key.recording_id, key.key_id, kek.id, nonce, wrapped)

    def _unwrap(self, entry: KeyEntry) -> DataKey:
        kek = self.key_ring.get(entry.kek_id)
        try:
            key = AESGCM(kek.key).decrypt(entry.nonce, entry.wrapped, entry.associated_data())
        except InvalidTag:
            raise KeyStoreError(
                f"{self._path(entry.recording_id)}: wrapped data key failed authentication "
                f"under {kek.id} (tampered, or copied from another recording)"
            ) from None
        return DataKey(entry.recording_id, entry.key_id, key)

    def _write(self, entry: KeyEntry) -> None:
        document = {
            "format": ENTRY_FORMAT,
            "version": ENTRY_VERSION,
            "recording_id": str(entry.recording_id),
            "key_id": entry.key_id.hex(),
            "kek_id": entry.kek_id,
            "nonce": base64.b64encode(entry.nonce).decode(),
            "wrapped": base64.b64encode(entry.wrapped).decode(),
        }
        write_atomically(self._path(entry.recording_id), json.dumps(document).encode(), 0o600)

    def _read(self, recording_id: UUID) -> KeyEntry | None:
        path = self._path(recording_id)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"{path}: cannot read: {exc.strerror}") from None
        return _parse_entry(text, path, recording_id)


def _new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)


def _overwrite(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        write_all(fd, secrets.token_bytes(os.fstat(fd).st_size))
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_entry(text: bytes, path: Path, recording_id: UUID) -> KeyEntry:
    def bad(problem: str) -> KeyStoreError:
        return KeyStoreError(f"{path}: not a valid key-store entry: {problem}")

    try:
        document: Any = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(str(exc)) from None
    if not isinstance(document, dict) or document.get("format") != ENTRY_FORMAT:
        raise bad(f'"format" is not "{ENTRY_FORMAT}"')
    if document.get("version") != ENTRY_VERSION:
        raise bad(f"version {document.get('version')!r}; this reads {ENTRY_VERSION}")
    try:
        entry = KeyEntry(
            recording_id=UUID(document["recording_id"]),
            key_id=bytes.fromhex(document["key_id"]),
            kek_id=str(document["kek_id"]),
            nonce=base64.b64decode(document["nonce"], validate=True),
            wrapped=base64.b64decode(document["wrapped"], validate=True),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    if entry.recording_id != recording_id:
        raise bad(f"it is the key of recording {entry.recording_id}")
    if len(entry.key_id) != KEY_ID_BYTES or len(entry.nonce) != WRAP_NONCE_BYTES:
        raise bad("key id or nonce of the wrong length")
    return entry
