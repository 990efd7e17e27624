"""The key ring and the key store: permissions, rotation, re-wrapping, shredding."""

from __future__ import annotations

import base64
import json
import stat
import uuid
from pathlib import Path

import pytest

from callrouter.vault import (
    KeyRing,
    KeyRingError,
    KeyStore,
    KeyStoreError,
    NoDataKey,
    Vault,
    VaultError,
)
from tests.vault.conftest import SEGMENT, read, write


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_ring_is_created_private_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "vault" / "keyring.json"
    ring = KeyRing.open(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    document = json.loads(path.read_text())
    assert document["format"] == "callrouter key ring"
    assert document["current"] == ring.current.id
    assert [k["id"] for k in document["keys"]] == [ring.current.id]
    assert len(ring.current.key) == 32
    assert ring.current.key.hex() not in repr(ring.current)
    # Opening again reads the same ring; it is never replaced.
    assert KeyRing.open(path).current == ring.current


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_a_key_ring_others_can_read_is_refused(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "keyring.json"
    KeyRing.open(path)
    path.chmod(loose)
    with pytest.raises(KeyRingError) as failure:
        KeyRing.open(path)
    assert str(failure.value) == (
        f"{path}: mode {loose:04o} lets group or others at the key ring; "
        f"refusing to use it (chmod 600 {path})"
    )


def test_a_ring_made_readable_while_in_use_is_refused_at_the_next_use(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    ring = KeyRing.open(path)
    path.chmod(0o644)
    with pytest.raises(KeyRingError, match="mode 0644"):
        ring.current  # noqa: B018 - the property reads the changed file


def test_missing_and_malformed_key_rings(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    with pytest.raises(KeyRingError, match="no key ring"):
        KeyRing.open(path, create=False)
    assert not path.exists()
    for text, problem in [
        ("{", "not a valid key ring: Expecting"),
        ('{"format": "x"}', '"format" is not "callrouter key ring"'),
        (
            '{"format": "callrouter key ring", "version": 1, "current": "a", "keys": '
            '[{"id": "a", "key": "c2hvcnQ="}]}',
            "key 'a' has 5 bytes, not 32",
        ),
        (
            '{"format": "callrouter key ring", "version": 1, "current": "b", "keys": '
            '[{"id": "a", "key": "' + "A" * 43 + '="}]}',
            "current key 'b' is not in the ring",
        ),
    ]:
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(KeyRingError, match=problem):
            KeyRing.open(path)


def test_rotate_and_rewrap(vault: Vault, tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    old_kek = vault.key_ring.current.id
    ids = [uuid.uuid4() for _ in range(3)]
    for number, recording_id in enumerate(ids):
        vault.create_key(recording_id)
        write(vault, recording_id, recordings / f"{number}.raw", bytes([number]) * 3 * SEGMENT)
    audio_before = {p: p.read_bytes() for p in recordings.iterdir()}

    new_kek = vault.rotate()
    assert new_kek != old_kek
    assert vault.key_ring.current.id == new_kek
    assert [k.id for k in vault.key_ring.keys] == [old_kek, new_kek]
    # Keys wrapped under the old KEK still open before any re-wrap.
    for number, recording_id in enumerate(ids):
        assert read(vault, recording_id, recordings / f"{number}.raw") == bytes([number]) * 192
    newer = uuid.uuid4()
    vault.create_key(newer)
    assert vault.status().keks[0].data_keys == 3
    assert vault.status().keks[1].data_keys == 1

    assert vault.rewrap() == 3
    assert vault.rewrap() == 0
    for recording_id in [*ids, newer]:
        entry = vault.key_store.entry(recording_id)
        assert entry is not None and entry.kek_id == new_kek
        assert mode(tmp_path / "keys" / f"{recording_id}.key") == 0o600
    status = vault.status()
    assert [(k.id, k.current, k.data_keys) for k in status.keks] == [
        (old_kek, False, 0),
        (new_kek, True, 4),
    ]
    assert status.current == new_kek and status.data_keys == 4
    # The audio was not touched, and still decrypts.
    assert {p: p.read_bytes() for p in recordings.iterdir()} == audio_before
    for number, recording_id in enumerate(ids):
        assert read(vault, recording_id, recordings / f"{number}.raw") == bytes([number]) * 192


def test_a_server_sees_a_rotation_made_by_another_process(tmp_path: Path) -> None:
    """The CLI rotates and re-wraps while the server runs: the server must follow."""
    server = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", SEGMENT)
    cli = Vault.open(tmp_path / "keyring.json", tmp_path / "keys", SEGMENT)
    recording_id = uuid.uuid4()
    server.create_key(recording_id)
    new_kek = cli.rotate()
    assert cli.rewrap() == 1
    assert server.key_store.get(recording_id).recording_id == recording_id
    other = uuid.uuid4()
    server.create_key(other)
    entry = cli.key_store.entry(other)
    assert entry is not None and entry.kek_id == new_kek


def test_a_key_store_entry_copied_to_another_recording_does_not_open(vault: Vault) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    vault.create_key(first)
    keys = vault.key_store.directory
    document = json.loads((keys / f"{first}.key").read_text())
    document["recording_id"] = str(second)
    (keys / f"{second}.key").write_text(json.dumps(document))
    with pytest.raises(KeyStoreError, match="failed authentication under kek-"):
        vault.key_store.get(second)

    (keys / f"{second}.key").write_bytes((keys / f"{first}.key").read_bytes())
    with pytest.raises(KeyStoreError, match=f"it is the key of recording {first}"):
        vault.key_store.get(second)


def test_a_key_wrapped_under_a_kek_the_ring_lacks(vault: Vault, tmp_path: Path) -> None:
    recording_id = uuid.uuid4()
    vault.create_key(recording_id)
    entry_path = tmp_path / "keys" / f"{recording_id}.key"
    document = json.loads(entry_path.read_text())
    document["kek_id"] = "kek-gone"
    entry_path.write_text(json.dumps(document))
    with pytest.raises(KeyRingError, match="no key-encryption key 'kek-gone'"):
        vault.key_store.get(recording_id)
    assert vault.status().missing_keks == {"kek-gone": 1}


def test_shred_overwrites_and_removes_the_entry_and_crash_leftovers(
    vault: Vault, tmp_path: Path
) -> None:
    recording_id = uuid.uuid4()
    vault.create_key(recording_id)
    keys = tmp_path / "keys"
    leftover = keys / f".{recording_id}.key.0123456789ab.tmp"
    leftover.write_bytes((keys / f"{recording_id}.key").read_bytes())
    assert vault.shred(recording_id)
    assert sorted(p.name for p in keys.iterdir()) == [".lock"]
    with pytest.raises(NoDataKey):
        vault.key_store.get(recording_id)


def test_the_key_store_is_private(tmp_path: Path) -> None:
    ring = KeyRing.open(tmp_path / "keyring.json")
    store = KeyStore(tmp_path / "keys", ring)
    assert mode(store.directory) == 0o700
    store.create(uuid.uuid4())
    (tmp_path / "keys").chmod(0o755)
    with pytest.raises(KeyStoreError, match="mode 0755 lets group or others at the key store"):
        KeyStore(tmp_path / "keys", ring)


def test_a_bad_segment_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match=r"segment size 0 is outside 1\.\.16777216 bytes"):
        Vault.open(tmp_path / "keyring.json", tmp_path / "keys", 0)


def test_key_files_never_hold_a_data_key_in_clear(vault: Vault, tmp_path: Path) -> None:
    recording_id = uuid.uuid4()
    vault.create_key(recording_id)
    key = vault.key_store.get(recording_id).key
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert key not in content
            assert key.hex().encode() not in content
            assert base64.b64encode(key) not in content
