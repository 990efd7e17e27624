"""Console sessions, kept server side: the cookie holds a random token, this table its SHA-256,
so a copy of the database logs nobody in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.store.console_users import COLUMNS, UserRow
from callrouter.store.database import Executor


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A live session and its user."""

    pending: bool
    created_at: datetime
    expires_at: datetime
    csrf_secret: bytes
    user: UserRow


async def create(
    db: Executor,
    token_hash: bytes,
    user_id: UUID,
    *,
    pending: bool,
    now: datetime,
    expires_at: datetime,
    csrf_secret: bytes,
    address: str | None,
) -> None:
    await db.execute(
        """INSERT INTO console_sessions
           (token_hash, user_id, pending, created_at, last_seen_at, expires_at, csrf_secret,
            address)
           VALUES ($1, $2, $3, $4, $4, $5, $6, $7)""",
        token_hash,
        user_id,
        pending,
        now,
        expires_at,
        csrf_secret,
        address,
    )


_USER = ", ".join(f"u.{c.strip()} AS u_{c.strip()}" for c in COLUMNS.split(","))


async def touch(
    db: Executor, token_hash: bytes, now: datetime, idle_since: datetime
) -> SessionRow | None:
    """The session of a token that is neither idle since ``idle_since`` nor past its absolute
    expiry, of an enabled user; it is marked seen ``now`` (one round trip)."""
    row = await db.fetchrow(
        f"""WITH s AS (
                UPDATE console_sessions SET last_seen_at = $2
                WHERE token_hash = $1 AND expires_at > $2 AND last_seen_at > $3
                RETURNING user_id, pending, created_at, expires_at, csrf_secret)
            SELECT s.pending, s.created_at, s.expires_at, s.csrf_secret, {_USER}
            FROM s JOIN console_users u ON u.id = s.user_id
            WHERE u.disabled_at IS NULL""",
        token_hash,
        now,
        idle_since,
    )
    if row is None:
        return None
    user = UserRow(**{k.removeprefix("u_"): v for k, v in row.items() if k.startswith("u_")})
    return SessionRow(
        row["pending"], row["created_at"], row["expires_at"], row["csrf_secret"], user
    )


async def delete(db: Executor, token_hash: bytes) -> None:
    await db.execute("DELETE FROM console_sessions WHERE token_hash = $1", token_hash)


async def delete_for_user(db: Executor, user_id: UUID) -> int:
    """End every session of a user (log out everywhere, disabled, password changed)."""
    status = await db.execute("DELETE FROM console_sessions WHERE user_id = $1", user_id)
    return int(status.split()[-1])


async def delete_expired(db: Executor, now: datetime, idle_since: datetime) -> int:
    status = await db.execute(
        "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at <= $2",
        now,
        idle_since,
    )
    return int(status.split()[-1])
