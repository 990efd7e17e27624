"""Console users (clients' staff and operator users), their recovery codes and one-time links.

Every read or write of a user of a client carries the scope: ``None`` for an operator user
(every client), else the client id, so one client's owner can never reach another's staff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from callrouter.store.database import Executor, translate_violation
from callrouter.store.ids import new_id

COLUMNS = (
    "id, client_id, email, name, role, password_hash, disabled_at, totp_secret, "
    "failed_logins, locked_until, created_at"
)
_UNIQUE = {"console_users_email_key": "email"}


@dataclass(frozen=True, slots=True)
class UserRow:
    """A console user as stored (the password only as its argon2id hash)."""

    id: UUID
    client_id: UUID | None
    email: str
    name: str
    role: str
    password_hash: str | None
    disabled_at: datetime | None
    totp_secret: str | None
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime


def _user(row: asyncpg.Record | None) -> UserRow | None:
    return None if row is None else UserRow(**row)


def _scoped(scope: UUID | None, first: int) -> str:
    """The tenant condition: none for the operator, else the client id as parameter $first."""
    return "" if scope is None else f" AND client_id = ${first}"


async def create(db: Executor, client_id: UUID | None, email: str, name: str, role: str) -> UserRow:
    """A new user without a password (it comes with the invitation).

    :raises StoreConflict: the email belongs to a user already (field ``email``).
    """
    try:
        row = await db.fetchrow(
            f"""INSERT INTO console_users (id, client_id, email, name, role)
                VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}""",
            new_id(),
            client_id,
            email,
            name,
            role,
        )
    except asyncpg.UniqueViolationError as exc:
        raise translate_violation(exc, _UNIQUE) from None
    user = _user(row)
    assert user is not None
    return user


async def by_email(db: Executor, email: str) -> UserRow | None:
    return _user(await db.fetchrow(f"SELECT {COLUMNS} FROM console_users WHERE email = $1", email))


async def get(db: Executor, user_id: UUID, scope: UUID | None) -> UserRow | None:
    return _user(
        await db.fetchrow(
            f"SELECT {COLUMNS} FROM console_users WHERE id = $1{_scoped(scope, 2)}",
            user_id,
            *([scope] if scope else []),
        )
    )


async def list_users(db: Executor, scope: UUID | None) -> list[UserRow]:
    where = "" if scope is None else "WHERE client_id = $1"
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM console_users {where} ORDER BY client_id NULLS FIRST, email",
        *([scope] if scope else []),
    )
    return [UserRow(**row) for row in rows]


async def update(db: Executor, user_id: UUID, scope: UUID | None, **values: Any) -> bool:
    """Set columns of one user of the scope; False when there is no such user.

    :param values: column -> value, among name, email, role, password_hash, disabled_at,
        totp_secret.
    """
    allowed = {"name", "email", "role", "password_hash", "disabled_at", "totp_secret"}
    assert values and set(values) <= allowed, values
    names = list(values)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
    extra = {"totp_last_step = NULL"} if "totp_secret" in values else set()
    try:
        status = await db.execute(
            f"UPDATE console_users SET {', '.join([sets, *extra])}, updated_at = now() "
            f"WHERE id = $1{_scoped(scope, len(names) + 2)}",
            user_id,
            *values.values(),
            *([scope] if scope else []),
        )
    except asyncpg.UniqueViolationError as exc:
        raise translate_violation(exc, _UNIQUE) from None
    return status != "UPDATE 0"


async def login_failed(db: Executor, user_id: UUID, limit: int, lock_until: datetime) -> bool:
    """Count a wrong password or code; the ``limit``-th in a row locks the user until
    ``lock_until`` (and starts the count again). True when this failure locked it."""
    locked = await db.fetchval(
        """UPDATE console_users
           SET failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END,
               locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END
           WHERE id = $1 RETURNING locked_until = $3""",
        user_id,
        limit,
        lock_until,
    )
    return bool(locked)


async def login_succeeded(db: Executor, user_id: UUID) -> None:
    await db.execute(
        "UPDATE console_users SET failed_logins = 0, locked_until = NULL WHERE id = $1", user_id
    )


async def use_totp_step(db: Executor, user_id: UUID, step: int) -> bool:
    """Record that the code of time step ``step`` was used; False when it (or a later one)
    was used already, so a code overheard once cannot log in again."""
    status = await db.execute(
        """UPDATE console_users SET totp_last_step = $2
           WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)""",
        user_id,
        step,
    )
    return status == "UPDATE 1"


async def replace_recovery_codes(db: Executor, user_id: UUID, hashes: list[bytes]) -> None:
    await db.execute("DELETE FROM console_recovery_codes WHERE user_id = $1", user_id)
    await db.executemany(
        "INSERT INTO console_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
        [(user_id, code_hash) for code_hash in hashes],
    )


async def use_recovery_code(db: Executor, user_id: UUID, code_hash: bytes, now: datetime) -> bool:
    """Spend one recovery code; False when it is not one of the user's unused codes."""
    status = await db.execute(
        """UPDATE console_recovery_codes SET used_at = $3
           WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL""",
        user_id,
        code_hash,
        now,
    )
    return status == "UPDATE 1"


async def recovery_codes_left(db: Executor, user_id: UUID) -> int:
    count = await db.fetchval(
        "SELECT count(*) FROM console_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
    return int(count or 0)


async def requires_2fa(db: Executor, client_id: UUID | None) -> bool:
    if client_id is None:
        return False
    return bool(
        await db.fetchval("SELECT console_requires_2fa FROM clients WHERE id = $1", client_id)
    )


async def set_requires_2fa(db: Executor, client_id: UUID, required: bool) -> None:
    await db.execute(
        "UPDATE clients SET console_requires_2fa = $2, updated_at = now() WHERE id = $1",
        client_id,
        required,
    )


async def client_exists(db: Executor, client_id: UUID) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM clients WHERE id = $1", client_id))


# -- one-time links ---------------------------------------------------------------------------


async def add_link(
    db: Executor, user_id: UUID, purpose: str, token_hash: bytes, expires_at: datetime
) -> None:
    """A new invitation or reset link; the user's earlier unused links stop working."""
    await db.execute(
        "UPDATE console_invitations SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
    await db.execute(
        """INSERT INTO console_invitations (token_hash, user_id, purpose, expires_at)
           VALUES ($1, $2, $3, $4)""",
        token_hash,
        user_id,
        purpose,
        expires_at,
    )


async def link_user(db: Executor, token_hash: bytes, now: datetime) -> UserRow | None:
    """The enabled user of a live, unused link."""
    return _user(
        await db.fetchrow(
            f"""SELECT {", ".join("u." + c.strip() for c in COLUMNS.split(","))}
                FROM console_invitations i JOIN console_users u ON u.id = i.user_id
                WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.expires_at > $2
                  AND u.disabled_at IS NULL""",
            token_hash,
            now,
        )
    )


async def spend_link(db: Executor, token_hash: bytes, now: datetime) -> UUID | None:
    """Use a live link once: its user's id, or None when it is unknown, used or expired."""
    user_id: UUID | None = await db.fetchval(
        """UPDATE console_invitations SET used_at = $2
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id""",
        token_hash,
        now,
    )
    return user_id
