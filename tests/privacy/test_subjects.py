"""Subjects and their keyed hashes; the server secret file."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import uuid4

import pytest

from callrouter.config import load_config
from callrouter.numbering import NumberFormatError
from callrouter.privacy.secret import SecretFileError, load_secret, secret_path
from callrouter.privacy.subjects import Subject, SubjectHasher, numbers_in_text, phone_formats


def test_the_secret_is_created_private_on_first_use_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "privacy" / "secret"
    first = load_secret(path)
    assert first.created and len(first.value) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    again = load_secret(path)
    assert not again.created and again.value == first.value
    assert first.value.hex() not in repr(first)
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary left behind


def test_a_secret_others_may_read_or_a_malformed_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    load_secret(path)
    path.chmod(0o640)
    with pytest.raises(SecretFileError, match=r"must be private to this account \(mode 0640\)"):
        load_secret(path)
    path.chmod(0o600)
    path.write_text("not hex at all\n")
    with pytest.raises(SecretFileError, match="not hex"):
        load_secret(path)
    path.write_text("abcd\n")
    with pytest.raises(SecretFileError, match="2 bytes; at least 32"):
        load_secret(path)


def test_the_secret_lives_under_the_data_directory_unless_configured(tmp_path: Path) -> None:
    config = load_config(None, {}, {"data_dir": str(tmp_path)})
    assert secret_path(config) == tmp_path / "privacy" / "secret"
    config = load_config(None, {"CALLROUTER_PRIVACY_SECRET_FILE": "/etc/callrouter/secret"})
    assert secret_path(config) == Path("/etc/callrouter/secret")


def test_hashes_are_keyed_and_bound_to_the_client_and_the_kind() -> None:
    secret = os.urandom(32)
    hasher = SubjectHasher(secret)
    client, other = uuid4(), uuid4()
    phone = Subject.phone("+44 7700 900123")
    assert phone.value == "+447700900123"
    assert hasher.digest(client, phone) == hasher.phone(client, "+447700900123")
    assert hasher.digest(client, phone) == SubjectHasher(secret).digest(client, phone)
    assert hasher.digest(client, phone) != hasher.digest(other, phone)
    assert hasher.digest(client, phone) != SubjectHasher(os.urandom(32)).digest(client, phone)
    call = uuid4()
    assert hasher.digest(client, Subject.call(call)) != hasher.digest(client, Subject.session(call))
    assert "+447700900123" not in repr(phone)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        SubjectHasher(b"short")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("07700 900123", "not in international format"),
        ("+44 7700", "not a possible phone number"),
        ("hello", "not a phone number"),
        ("+" + "1" * 45, "too long"),
    ],
)
def test_a_malformed_number_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(NumberFormatError, match=reason):
        Subject.phone(text)


def test_every_stored_spelling_of_a_number_is_known() -> None:
    formats = phone_formats("+447700900123")
    assert formats.spellings == (
        "+447700900123",
        "447700900123",
        "00447700900123",
        "07700900123",
        "07700 900123",
        "+44 7700 900123",
    )
    assert (formats.region, formats.national_significant) == ("GB", "7700900123")
    for text in (
        "07700 900123",
        "call me on 07700 900123 please",
        "0044 7700 900123",
        "https://acme.example/thanks?tel=07700900123",
    ):
        assert "+447700900123" in numbers_in_text(text, "GB"), text
    assert "+447700900123" not in numbers_in_text("order 7700900124", "GB")
