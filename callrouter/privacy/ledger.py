"""The rights ledger: erasures and objections carried out, kept outside the database.

A restore puts the database back as it was when the backup was taken. Without this, a caller
who asked for erasure after that moment would come back (their calls, visits and forms), and
one who objected would be processed again: the request register and the suppression list are
in the same database. So each erasure, objection and consent withdrawal is also written here,
one JSON line, fsynced before the database is changed, and ``callrouter restore`` carries out
again every entry newer than the backup (``replay``).

Nothing here names a person: a phone number is kept as its keyed hash (the same HMAC the
suppression list keeps, ``subjects.SubjectHasher``), a call or visit by its random id. The
file lives beside the privacy secret (``[privacy] secret_file``), which a restore needs anyway
and which the deployment keeps apart from the database, as it does the key store.

An entry is written before the change it describes, so a crash between the two leaves an
entry for a request that did not complete; replaying it carries it out, which is what the
requester asked for.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args
from uuid import UUID

from callrouter.config import Config
from callrouter.privacy.secret import secret_path
from callrouter.privacy.subjects import SUBJECT_KINDS, SubjectKind

__all__ = ["LedgerEntry", "LedgerKind", "RightsLedger", "ledger_path"]

log = logging.getLogger(__name__)

LedgerKind = Literal["erasure", "objection", "consent_withdrawal"]
LEDGER_KINDS: tuple[LedgerKind, ...] = get_args(LedgerKind)


def ledger_path(config: Config) -> Path:
    """``rights-ledger.jsonl`` in the privacy secret's directory."""
    return secret_path(config).with_name("rights-ledger.jsonl")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One right carried out: a phone subject by its keyed hash, a call or visit by its id."""

    at: datetime
    client_id: UUID
    kind: LedgerKind
    subject_kind: SubjectKind
    subject_hash: bytes | None = None
    subject_id: UUID | None = None

    def line(self) -> bytes:
        record = {
            "at": self.at.isoformat(),
            "client": str(self.client_id),
            "kind": self.kind,
            "subject_kind": self.subject_kind,
            "subject_hash": self.subject_hash.hex() if self.subject_hash else None,
            "subject_id": str(self.subject_id) if self.subject_id else None,
        }
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> LedgerEntry:
        """:raises ValueError: the line is not an entry (a torn write, a foreign line)."""
        record = json.loads(line)
        kind, subject_kind = record["kind"], record["subject_kind"]
        if kind not in LEDGER_KINDS or subject_kind not in SUBJECT_KINDS:
            raise ValueError(f"unknown kind {kind!r} / {subject_kind!r}")
        at = datetime.fromisoformat(record["at"])
        if at.tzinfo is None:
            raise ValueError("time without a zone")
        digest, subject_id = record.get("subject_hash"), record.get("subject_id")
        entry = cls(
            at,
            UUID(record["client"]),
            kind,
            subject_kind,
            bytes.fromhex(digest) if digest else None,
            UUID(subject_id) if subject_id else None,
        )
        if (entry.subject_hash is None) == (entry.subject_id is None):
            raise ValueError("an entry names its subject by a hash or an id")
        return entry


class RightsLedger:
    """An append-only file of :class:`LedgerEntry` lines. Blocking: call it in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: LedgerEntry) -> None:
        """Add ``entry`` and make it durable before returning."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # One write of one line: O_APPEND keeps concurrent writers' lines whole.
            os.write(fd, entry.line())
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> Iterator[LedgerEntry]:
        """Every entry in the order written; a line that does not parse (the torn end of a
        write cut off by a crash) is skipped and logged."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield LedgerEntry.parse(line)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "privacy: %s:%d: not a ledger entry, skipped: %s", self.path, number, exc
                )
