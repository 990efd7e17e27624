"""One-time links: an invitation to set a first password, or a password reset.

The link carries 256 random bits; the database keeps only their SHA-256, marks the link used
when it is spent, and a new link for the same user ends the older ones.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from uuid import UUID

from callrouter.store import console_users
from callrouter.store.database import Executor

PATH = "/invite/"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def new_link(db: Executor, user_id: UUID, purpose: str, now: datetime, hours: float) -> str:
    """A fresh link's token (shown or mailed once, never stored)."""
    token = secrets.token_urlsafe(32)
    await console_users.add_link(
        db, user_id, purpose, token_hash(token), now + timedelta(hours=hours)
    )
    return token


def link_url(base: str, token: str) -> str:
    return base.rstrip("/") + PATH + token


def token_of(url: str) -> str:
    """The token at the end of a link made by ``link_url``."""
    return url.rsplit(PATH, 1)[1]
