"""Field contracts shared by several resources."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from callrouter.api.schema import Field
from callrouter.numbering import to_e164

E164_INPUT = r"^\+[1-9][0-9 ().-]{5,38}$"
_SIP_URI = re.compile(r"^sips?:[^\s<>\"]+$", re.IGNORECASE)


def destination(text: str) -> str:
    """A call destination: a SIP URI (sip:/sips:) or a phone number normalised to E.164."""
    if text.lower().startswith(("sip:", "sips:")):
        if not _SIP_URI.match(text) or ("@" not in text and ":" not in text[4:]):
            raise ValueError("not a valid SIP URI")
        return text
    return to_e164(text)


def origin(text: str) -> str:
    """A web origin as browsers send it: scheme://host[:port], nothing more."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an origin like https://www.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError("must be an origin (scheme, host and port only)")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def e164(name: str, doc: str, *, required: bool = False, nullable: bool = False) -> Field:
    return Field(
        name,
        "string",
        doc + " E.164, spaces and punctuation allowed: +44 151 555 0001.",
        required=required,
        nullable=nullable,
        max_length=40,
        pattern=E164_INPUT,
        check=to_e164,
    )


def text(name: str, doc: str, *, required: bool = False, max_length: int = 200) -> Field:
    return Field(
        name, "string", doc, required=required, nullable=not required, max_length=max_length
    )


def uuid(name: str, doc: str, *, required: bool = False, nullable: bool = True) -> Field:
    return Field(
        name,
        "string",
        doc,
        required=required,
        nullable=nullable,
        format="uuid",
        max_length=36,
        check=_uuid_text,
    )


def _uuid_text(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ValueError("must be a UUID") from None


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-23T09:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must include a time zone (Z or +01:00)")
    return parsed


def timestamp(name: str, doc: str) -> Field:
    return Field(name, "string", doc, format="date-time", max_length=40, check=_timestamp)


CLIENT_ID = uuid(
    "client_id", "Owning client. Required with an operator key; a client key may only name itself."
)
TIMESTAMPS = {
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
}
