"""The rights ledger file: entries round-trip, the file is private, a torn end is skipped."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from callrouter.privacy.ledger import LedgerEntry, RightsLedger

AT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def test_entries_come_back_in_order_and_the_file_is_ours_alone(tmp_path: Path) -> None:
    ledger = RightsLedger(tmp_path / "privacy" / "rights-ledger.jsonl")
    client = uuid4()
    written = [
        LedgerEntry(AT, client, "erasure", "phone", subject_hash=bytes(range(32))),
        LedgerEntry(AT, client, "erasure", "call", subject_id=uuid4()),
        LedgerEntry(AT, client, "objection", "phone", subject_hash=b"\x01" * 32),
    ]
    for entry in written:
        ledger.append(entry)
    assert list(ledger.entries()) == written
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ledger.path.parent.stat().st_mode) == 0o700
    assert b"+44" not in ledger.path.read_bytes()  # numbers only as keyed hashes


def test_a_torn_last_line_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = RightsLedger(tmp_path / "rights-ledger.jsonl")
    entry = LedgerEntry(AT, uuid4(), "erasure", "session", subject_id=uuid4())
    ledger.append(entry)
    with ledger.path.open("ab") as file:
        file.write(entry.line()[:40])  # a crash in the middle of a write
    assert list(ledger.entries()) == [entry]
    assert "rights-ledger.jsonl:2: not a ledger entry" in caplog.text


def test_a_missing_ledger_has_no_entries(tmp_path: Path) -> None:
    assert list(RightsLedger(tmp_path / "none.jsonl").entries()) == []
