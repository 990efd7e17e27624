"""A vault in a temp directory: key ring, key store and recordings apart, as in production."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from callrouter.vault import Vault

SEGMENT = 64


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    """Small segments, so that a few hundred bytes span many of them."""
    return Vault.open(tmp_path / "secrets" / "keyring.json", tmp_path / "keys", SEGMENT)


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


@pytest.fixture
def recording_id(vault: Vault) -> uuid.UUID:
    recording = uuid.uuid4()
    vault.create_key(recording)
    return recording


def write(vault: Vault, recording_id: uuid.UUID, path: Path, data: bytes) -> None:
    with vault.writer(recording_id, path) as out:
        out.write(data)


def read(vault: Vault, recording_id: uuid.UUID, path: Path) -> bytes:
    with vault.reader(recording_id, path) as source:
        return source.read_all()
