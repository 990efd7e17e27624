"""Making console users and their one-time links: what the users page and the ``users``
commands share (validation, the link, the mail, the audit entry)."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime
from uuid import UUID

from callrouter.console.links import link_url, new_link
from callrouter.console.mail import Mailer
from callrouter.console.permissions import CLIENT_ROLES
from callrouter.store import console_audit, console_users
from callrouter.store.console_users import UserRow
from callrouter.store.database import Executor

log = logging.getLogger(__name__)


class AccountError(ValueError):
    """A field of a new or changed user is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def normal_email(text: str) -> str:
    email = text.strip().lower()
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(email) > 254
        or any(c.isspace() for c in email)
    ):
        raise AccountError("email", "not an email address")
    return email


def check_name(text: str) -> str:
    name = text.strip()
    if not 1 <= len(name) <= 200:
        raise AccountError("name", "between 1 and 200 characters")
    return name


def check_role(role: str, client_id: UUID | None) -> str:
    if client_id is None and role != "operator":
        raise AccountError("role", "a user without a client is an operator (role operator)")
    if client_id is not None and role not in CLIENT_ROLES:
        raise AccountError("role", f"one of {', '.join(CLIENT_ROLES)}")
    return role


async def invite(
    db: Executor,
    *,
    client_id: UUID | None,
    email: str,
    name: str,
    role: str,
    now: datetime,
    hours: float,
    base_url: str,
    actor: str,
    address: str | None = None,
) -> tuple[UserRow, str]:
    """Create a user without a password and their invitation link.

    :raises AccountError: a field is wrong (the client does not exist: ``client``).
    :raises StoreConflict: the email is taken.
    """
    email, name, role = normal_email(email), check_name(name), check_role(role, client_id)
    if client_id is not None and not await console_users.client_exists(db, client_id):
        raise AccountError("client", f"no client {client_id}")
    user = await console_users.create(db, client_id, email, name, role)
    token = await new_link(db, user.id, "invite", now, hours)
    await console_audit.insert(
        db,
        client_id=client_id,
        actor=actor,
        action="user.invited",
        target=email,
        details={"role": role},
        address=address,
    )
    return user, link_url(base_url, token)


async def reset_link(
    db: Executor,
    user: UserRow,
    *,
    now: datetime,
    hours: float,
    base_url: str,
    actor: str,
    address: str | None = None,
) -> str:
    """A one-time link that sets a new password (the user's older links stop working)."""
    token = await new_link(db, user.id, "reset", now, hours)
    await console_audit.insert(
        db,
        client_id=user.client_id,
        actor=actor,
        action="user.reset_link",
        target=user.email,
        address=address,
    )
    return link_url(base_url, token)


async def mail_link(mailer: Mailer | None, user: UserRow, url: str, *, reset: bool) -> bool:
    """Send the link when SMTP is configured; False when not sent (then it is shown)."""
    if mailer is None:
        return False
    subject = "Reset your callrouter password" if reset else "Your callrouter console login"
    body = (
        f"Hello {user.name},\n\n"
        + (
            "Someone asked for a new password for you"
            if reset
            else "You are invited to the call tracking console"
        )
        + f". Open this link to set your password (it works once):\n\n{url}\n\n"
        "If you did not expect this mail, ignore it.\n"
    )
    try:
        await mailer.send(user.email, subject, body)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("console: could not mail the link to %s: %s", user.email, exc)
        return False
    return True
