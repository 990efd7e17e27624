"""The key ring: the key-encryption keys (KEKs) that wrap every recording's data key.

One JSON file, mode 0600, kept out of the recordings directory and out of their backups::

    {"format": "callrouter key ring", "version": 1, "current": "kek-5e6f7a8b",
     "keys": [{"id": "kek-1a2b3c4d", "key": "<base64, 32 bytes>"},
              {"id": "kek-5e6f7a8b", "key": "<base64, 32 bytes>"}]}

New data keys are wrapped under the current KEK; older KEKs stay so that data keys not yet
re-wrapped still open. The file is replaced atomically, and re-read when another process (the
``callrouter vault`` command beside a running server) has replaced it.
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

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callrouter.vault.durable import locked, private_directory, write_atomically
from callrouter.vault.errors import KeyRingError

__all__ = ["Kek", "KeyRing"]

RING_FORMAT = "callrouter key ring"
RING_VERSION = 1
KEK_BYTES = 32

# What identifies one version of the file: a replacement by rename changes the inode, and a
# chmod the ctime (so a ring made readable to others is refused at its next use).
_Stamp = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Kek:
    """One key-encryption key."""

    id: str
    """Its name in the ring and in every key-store entry it wraps."""
    key: bytes = field(repr=False)
    """The 256-bit AES key."""


def _stamp(stat: os.stat_result) -> _Stamp:
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)


def _new_kek(taken: set[str]) -> Kek:
    while (kek_id := f"kek-{secrets.token_hex(4)}") in taken:
        pass
    return Kek(kek_id, AESGCM.generate_key(bit_length=256))


class KeyRing:
    """The KEKs from the key ring file, and which one is current."""

    def __init__(self, path: Path) -> None:
        """Use :meth:`open`, which reads (or creates) the file."""
        self.path = path
        self._keys: dict[str, Kek] = {}
        self._current = ""
        self._stamp: _Stamp = (0, 0, 0, 0, 0)

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> KeyRing:
        """Read the key ring at ``path``, creating it (with one KEK) if it does not exist.

        :param create: False to fail instead of creating a missing ring.
        :raises KeyRingError: the file is missing (and not to be created), unreadable,
            readable by group or others, or malformed.
        """
        ring = cls(path)
        if not path.exists():
            if not create:
                raise KeyRingError(
                    f"{path}: no key ring (it is created when the first recording key is "
                    "made, or by `callrouter vault rotate`)"
                )
            ring._create()
        ring._load()
        return ring

    @property
    def current(self) -> Kek:
        """The KEK that wraps new data keys."""
        self._refresh()
        return self._keys[self._current]

    @property
    def keys(self) -> list[Kek]:
        """Every KEK, oldest first."""
        self._refresh()
        return list(self._keys.values())

    def get(self, kek_id: str) -> Kek:
        """The KEK named ``kek_id``.

        :raises KeyRingError: the ring has no such KEK.
        """
        self._refresh()
        try:
            return self._keys[kek_id]
        except KeyError:
            raise KeyRingError(f"{self.path}: no key-encryption key {kek_id!r}") from None

    def rotate(self) -> Kek:
        """Add a new KEK and make it current; the others stay for the keys they wrap."""
        with locked(self._lock_file):
            self._load()
            kek = _new_kek(set(self._keys))
            self._write([*self._keys.values(), kek], kek.id)
            self._load()
        return kek

    def copy_to(self, target: Path) -> None:
        """Write the ring, as one consistent version, to ``target`` (mode 0600): backups."""
        with locked(self._lock_file, shared=True):
            data = self.path.read_bytes()
        private_directory(target.parent, create=True)
        write_atomically(target, data)

    @property
    def _lock_file(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _create(self) -> None:
        private_directory(self.path.parent, create=True)
        with locked(self._lock_file):
            # Another process may have created it while we waited: never replace a ring,
            # the data keys it wraps would be lost with it.
            if not self.path.exists():
                kek = _new_kek(set())
                self._write([kek], kek.id)

    def _write(self, keys: list[Kek], current: str) -> None:
        document = {
            "format": RING_FORMAT,
            "version": RING_VERSION,
            "current": current,
            "keys": [{"id": k.id, "key": base64.b64encode(k.key).decode()} for k in keys],
        }
        write_atomically(self.path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)

    def _refresh(self) -> None:
        try:
            stamp = _stamp(os.stat(self.path))
        except OSError as exc:
            raise KeyRingError(f"{self.path}: cannot read the key ring: {exc.strerror}") from None
        if stamp != self._stamp:
            self._load()

    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KeyRingError(f"{self.path}: cannot read the key ring: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            stat = os.fstat(fd)
            mode = stat.st_mode & 0o777
            if mode & 0o077:
                raise KeyRingError(
                    f"{self.path}: mode {mode:04o} lets group or others at the key ring; "
                    f"refusing to use it (chmod 600 {self.path})"
                )
            text = file.read()
        keys, current = self._parse(text)
        self._keys, self._current, self._stamp = keys, current, _stamp(stat)

    def _parse(self, text: bytes) -> tuple[dict[str, Kek], str]:
        def bad(problem: str) -> KeyRingError:
            return KeyRingError(f"{self.path}: not a valid key ring: {problem}")

        try:
            document: Any = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(str(exc)) from None
        if not isinstance(document, dict) or document.get("format") != RING_FORMAT:
            raise bad(f'"format" is not "{RING_FORMAT}"')
        if document.get("version") != RING_VERSION:
            raise bad(f"version {document.get('version')!r}; this reads {RING_VERSION}")
        entries = document.get("keys")
        if not isinstance(entries, list) or not entries:
            raise bad('"keys" must be a non-empty list')
        keys: dict[str, Kek] = {}
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise bad(f"key {number} has no id")
            kek_id = entry["id"]
            try:
                key = base64.b64decode(entry.get("key", ""), validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise bad(f"key {kek_id!r} is not base64") from None
            if len(key) != KEK_BYTES:
                raise bad(f"key {kek_id!r} has {len(key)} bytes, not {KEK_BYTES}")
            if kek_id in keys:
                raise bad(f"key id {kek_id!r} appears twice")
            keys[kek_id] = Kek(kek_id, key)
        current = document.get("current")
        if current not in keys:
            raise bad(f"current key {current!r} is not in the ring")
        return keys, current
