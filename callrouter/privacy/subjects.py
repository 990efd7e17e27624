"""Data subjects as requests name them, and their keyed hashes.

A subject is a phone number (the caller), a call id or a visitor session id. The register, the
suppression list and the audit log hold only ``SubjectHasher.digest``: HMAC-SHA256 keyed with
the server secret over the client id, the kind and the value. The client id is inside the MAC,
so the same number hashes differently for each client and one client's list says nothing about
another's.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal, get_args
from uuid import UUID

import phonenumbers

from callrouter.numbering import NumberFormatError, to_e164

__all__ = [
    "PhoneFormats",
    "Subject",
    "SubjectHasher",
    "SubjectKind",
    "numbers_in_text",
    "phone_formats",
    "possible_e164",
]

SubjectKind = Literal["phone", "call", "session"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = get_args(SubjectKind)


@dataclass(frozen=True, slots=True, repr=False)
class Subject:
    """Whom a request is about: a phone number in E.164, or a call or session id."""

    kind: SubjectKind
    value: str

    @classmethod
    def phone(cls, text: str) -> Subject:
        """A phone number written in international format, normalised to E.164.

        :raises NumberFormatError: with the reason, for an API field error.
        """
        return cls("phone", possible_e164(text))

    @classmethod
    def call(cls, call_id: UUID) -> Subject:
        return cls("call", str(call_id))

    @classmethod
    def session(cls, session_id: UUID) -> Subject:
        return cls("session", str(session_id))

    @property
    def id(self) -> UUID:
        """The call or session id (not for phone subjects)."""
        if self.kind == "phone":
            raise ValueError("a phone subject has no id")
        return UUID(self.value)

    def __repr__(self) -> str:
        # A subject may be a phone number: keep it out of logs and tracebacks.
        shown = self.value if self.kind != "phone" else "+…"
        return f"Subject({self.kind}, {shown})"


class SubjectHasher:
    """Keyed hashes of subjects (HMAC-SHA256 with the server secret).

    :param secret: at least 32 random bytes (``secret.load_secret``).
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the privacy secret must be at least 32 bytes")
        # The keyed state is computed once; each digest copies it (the INVITE path).
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def digest(self, client_id: UUID, subject: Subject) -> bytes:
        """The 32-byte keyed hash of ``subject`` for one client."""
        return self._mac(client_id, subject.kind, subject.value)

    def phone(self, client_id: UUID, e164: str) -> bytes:
        """The keyed hash of a caller number already in E.164 (the call path)."""
        return self._mac(client_id, "phone", e164)

    def _mac(self, client_id: UUID, kind: str, value: str) -> bytes:
        mac = self._keyed.copy()
        mac.update(client_id.bytes)
        mac.update(kind.encode())
        mac.update(b"\x00")
        mac.update(value.encode())
        return mac.digest()


@dataclass(frozen=True, slots=True, repr=False)
class PhoneFormats:
    """The spellings of one number that stored data may contain."""

    e164: str
    region: str | None
    national_significant: str
    spellings: tuple[str, ...]
    """E.164, without the +, with 00, national (with trunk prefix) and the display forms."""


def phone_formats(e164: str) -> PhoneFormats:
    """Every common spelling of ``e164``: ``+447700900123``, ``447700900123``,
    ``00447700900123``, ``07700900123``, ``07700 900123``, ``+44 7700 900123``."""
    parsed = phonenumbers.parse(e164, None)
    # A number outside the allocated ranges has no region of its own: take its country's main one.
    region = phonenumbers.region_code_for_number(parsed) or (
        phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    )
    nsn = phonenumbers.national_significant_number(parsed)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    digits = e164.removeprefix("+")
    national_digits = "".join(ch for ch in national if ch.isdigit())
    spellings = dict.fromkeys(
        (e164, digits, "00" + digits, national_digits, national, international)
    )
    return PhoneFormats(e164, region, nsn, tuple(spellings))


def possible_e164(text: str, region: str | None = None) -> str:
    """``text`` as E.164 if it can be a phone number of its country (see ``to_e164``).

    :raises NumberFormatError: with the reason.
    """
    return to_e164(text, region, allocated=False)


def numbers_in_text(text: str, region: str | None) -> set[str]:
    """The E.164 form of every phone number written in free text (a form field, a URL)."""
    found = {
        phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        for match in phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.POSSIBLE
        )
    }
    # A field holding only a number in a spelling the matcher skips (no spaces, 00 prefix).
    with contextlib.suppress(NumberFormatError):
        found.add(possible_e164(text.strip(), region))
    return found
