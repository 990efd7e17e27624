"""Recording encryption at rest: key ring, envelope encryption, streaming AEAD files.

vault = Vault.from_config(config)
vault.create_key(recording_id)
with vault.writer(recording_id, path) as out:
    out.write(pcm)          # as audio arrives
    out.flush()             # about once a second: durable up to the last full segment
with vault.reader(recording_id, path) as source:
    source.read_range(0, 4096)
vault.shred(recording_id)   # every copy of every file of the recording is now noise
"""

from callrouter.vault.errors import (
    KeyRingError,
    KeyStoreError,
    NoDataKey,
    NotARecordingFile,
    TamperedSegment,
    TruncatedFile,
    UnfinishedFileExists,
    VaultError,
    WrongRecording,
)
from callrouter.vault.keyring import Kek, KeyRing
from callrouter.vault.keystore import DataKey, KeyEntry, KeyStore
from callrouter.vault.reader import RecordingReader
from callrouter.vault.stream import DEFAULT_SEGMENT_BYTES
from callrouter.vault.vault import KekStatus, Vault, VaultStatus, vault_paths
from callrouter.vault.writer import RecordingWriter, part_path_of

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "DataKey",
    "Kek",
    "KekStatus",
    "KeyEntry",
    "KeyRing",
    "KeyRingError",
    "KeyStore",
    "KeyStoreError",
    "NoDataKey",
    "NotARecordingFile",
    "RecordingReader",
    "RecordingWriter",
    "TamperedSegment",
    "TruncatedFile",
    "UnfinishedFileExists",
    "Vault",
    "VaultError",
    "VaultStatus",
    "WrongRecording",
    "part_path_of",
    "vault_paths",
]
