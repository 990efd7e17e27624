"""Time-ordered identifiers (UUIDv7, RFC 9562 §5.7), so that ordering by id is creation order.

Cursor pagination then needs nothing but the last id seen.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime
from uuid import UUID


def new_id() -> UUID:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, 12 bits of sub-millisecond time (RFC 9562
    §6.2 method 3, so ids made one after another in the same millisecond still sort in order),
    then 62 random bits."""
    nanos = time.time_ns()
    millis, sub = divmod(nanos, 1_000_000)
    rand = int.from_bytes(os.urandom(8), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= (sub * 4096 // 1_000_000) << 64  # rand_a: the fraction of the millisecond
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return UUID(int=value)


def derived_id(base: UUID, other: UUID) -> UUID:
    """The same id every time for the pair, as time-ordered as ``base`` (a UUIDv7): its time
    and version bits are ``base``'s, its 62 random bits a hash of both. Lets a retried insert
    of one event for one webhook find the row a lost answer already made."""
    digest = int.from_bytes(hashlib.sha256(base.bytes + other.bytes).digest()[:8], "big")
    value = (base.int >> 64) << 64
    value |= 0b10 << 62  # variant
    value |= digest & 0x3FFF_FFFF_FFFF_FFFF
    return UUID(int=value)


def id_floor(at: datetime) -> UUID:
    """The smallest UUIDv7 of the millisecond ``at``: ids made at or after ``at`` are not
    smaller, ids made before it are smaller (a time range becomes an id range)."""
    millis = int(at.timestamp() * 1000)
    return UUID(int=((millis & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | (0b10 << 62))
