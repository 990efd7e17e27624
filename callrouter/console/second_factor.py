"""TOTP second factor (RFC 6238 via pyotp) and single-use recovery codes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

import pyotp
import segno

ISSUER = "callrouter"
RECOVERY_CODES = 10
STEP_SECONDS = 30


def new_secret() -> str:
    """A base32 secret of 160 bits (RFC 4226 §4 recommends at least that)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (shown as text and typed or pasted)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_code(uri: str) -> str:
    """The URI as a QR code, an SVG in a data: URI (an <img>, which the CSP allows; no
    inline script or style)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=4, border=2))


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code ``code`` is, within one step of ``now`` either way (clock
    drift), or None. The caller refuses a step used already (replay)."""
    code = "".join(code.split())
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now) // STEP_SECONDS
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


@dataclass(frozen=True)
class RecoveryCodes:
    """Codes shown once, and the hashes that are stored."""

    codes: list[str]
    hashes: list[bytes]


def new_recovery_codes() -> RecoveryCodes:
    """Ten codes of 80 random bits each (xxxx-xxxx-xxxx-xxxx in base32)."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return RecoveryCodes(codes, [hash_recovery_code(code) for code in codes])


def hash_recovery_code(code: str) -> bytes:
    """SHA-256 of the code without separators or case (80 random bits need no slow hash)."""
    normal = "".join(c for c in code.lower() if c.isalnum())
    return hashlib.sha256(normal.encode()).digest()


def looks_like_recovery_code(code: str) -> bool:
    return len("".join(c for c in code if c.isalnum())) == 16
