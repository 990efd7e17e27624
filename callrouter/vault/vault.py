"""The vault: envelope encryption of call recordings, as the rest of callrouter uses it.

Each recording gets a random 256-bit data key, wrapped by the key ring's current KEK and kept in
the key store; every file of the recording (the raw stream during the call, the FLAC after it)
is sealed with that key under its own nonce prefix. Shredding the key makes every copy of every
one of those files unreadable, wherever it was copied to.

All of it is blocking file and crypto work: call it from the media worker or an executor,
never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from callrouter.config import Config
from callrouter.vault.errors import VaultError
from callrouter.vault.keyring import KeyRing
from callrouter.vault.keystore import KeyStore
from callrouter.vault.reader import RecordingReader
from callrouter.vault.stream import DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES
from callrouter.vault.writer import RecordingWriter, recover

__all__ = ["KekStatus", "Vault", "VaultStatus", "vault_paths"]


@dataclass(frozen=True)
class KekStatus:
    """One KEK of the ring, as ``callrouter vault status`` shows it."""

    id: str
    """The KEK's id."""
    current: bool
    """Whether new data keys are wrapped under it."""
    data_keys: int
    """How many data keys in the key store it wraps."""


@dataclass(frozen=True)
class VaultStatus:
    """The key ring and the key store at a glance."""

    key_ring: Path
    """The key ring file."""
    keys_dir: Path
    """The key store directory."""
    keks: tuple[KekStatus, ...]
    """Every KEK, oldest first."""
    missing_keks: dict[str, int]
    """KEK ids that key-store entries name but the ring lacks, with their entry counts."""

    @property
    def current(self) -> str:
        """The current KEK's id."""
        return next(kek.id for kek in self.keks if kek.current)

    @property
    def data_keys(self) -> int:
        """Data keys in the key store."""
        return sum(kek.data_keys for kek in self.keks) + sum(self.missing_keks.values())


def vault_paths(config: Config) -> tuple[Path, Path]:
    """The key ring file and the key store directory that ``config`` names."""
    base = config.data_dir / "vault"
    key_ring = config.vault.key_ring or base / "keyring.json"
    keys_dir = config.vault.keys_dir or base / "keys"
    return key_ring, keys_dir


class Vault:
    """Data keys per recording, and the files they seal."""

    def __init__(
        self, key_ring: KeyRing, key_store: KeyStore, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        """:param key_ring: the KEKs.
        :param key_store: the wrapped data keys (wrapped by ``key_ring``).
        :param segment_bytes: plaintext bytes per segment in new files.
        :raises VaultError: ``segment_bytes`` is out of range.
        """
        if not 1 <= segment_bytes <= MAX_SEGMENT_BYTES:
            raise VaultError(
                f"segment size {segment_bytes} is outside 1..{MAX_SEGMENT_BYTES} bytes"
            )
        self.key_ring = key_ring
        self.key_store = key_store
        self.segment_bytes = segment_bytes

    @classmethod
    def open(
        cls,
        key_ring: Path,
        keys_dir: Path,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        *,
        create: bool = True,
    ) -> Vault:
        """Open (and on first use create) the key ring and the key store.

        :param create: False to fail on a missing key ring rather than make one.
        :raises KeyRingError: see :meth:`KeyRing.open`.
        :raises KeyStoreError: the key store directory is open to group or others.
        """
        ring = KeyRing.open(key_ring, create=create)
        return cls(ring, KeyStore(keys_dir, ring, create=create), segment_bytes)

    @classmethod
    def from_config(cls, config: Config, *, create: bool = True) -> Vault:
        """The vault that the ``[vault]`` settings describe; see :meth:`open`."""
        key_ring, keys_dir = vault_paths(config)
        return cls.open(key_ring, keys_dir, config.vault.segment_bytes, create=create)

    def create_key(self, recording_id: UUID) -> None:
        """Give ``recording_id`` a data key, unless it has one already."""
        self.key_store.create(recording_id)

    def writer(self, recording_id: UUID, path: Path) -> RecordingWriter:
        """Start writing a file of ``recording_id`` to ``path`` (via ``<path>.part``).

        :raises NoDataKey: the recording has no data key (see :meth:`create_key`).
        :raises UnfinishedFileExists: an interrupted write's ``.part`` file is in the way.
        """
        return RecordingWriter(self.key_store.get(recording_id), path, self.segment_bytes)

    def reader(self, recording_id: UUID, path: Path) -> RecordingReader:
        """Open a file of ``recording_id`` for reading (close it, or use it as a context).

        :raises VaultError: see :class:`RecordingReader`.
        """
        return RecordingReader(path, recording_id, self.key_store.get)

    def recover(self, recording_id: UUID, part_path: Path, path: Path) -> int:
        """Finish an interrupted write from what reached the disk; see :func:`recover`.

        :returns: the plaintext bytes kept.
        """
        return recover(self.key_store.get(recording_id), part_path, path, self.segment_bytes)

    def shred(self, recording_id: UUID) -> bool:
        """Destroy the data key of ``recording_id``: all its files become unreadable.

        :returns: whether there was a key (shredding twice is harmless).
        """
        return self.key_store.shred(recording_id)

    def rotate(self) -> str:
        """Make a new KEK current (new data keys are wrapped under it); return its id."""
        return self.key_ring.rotate().id

    def rewrap(self) -> int:
        """Re-wrap every data key under the current KEK; return how many were re-wrapped."""
        return self.key_store.rewrap()

    def status(self) -> VaultStatus:
        """The KEKs, the current one, and how many data keys each wraps."""
        usage = self.key_store.kek_usage()
        current = self.key_ring.current.id
        keks = tuple(
            KekStatus(kek.id, kek.id == current, usage.pop(kek.id, 0)) for kek in self.key_ring.keys
        )
        return VaultStatus(self.key_ring.path, self.key_store.directory, keks, usage)
