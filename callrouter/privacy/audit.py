"""The privacy audit log: who removed, exported, corrected or keyed what, and how much.

Each entry names the actor (``key:<api key id>``, ``cli`` or ``retention``), the time, the
action, the client, counts of items, and the subject only as its keyed hash: the log proves
what was done without itself holding the personal data it is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from callrouter.privacy.subjects import Subject, SubjectHasher
from callrouter.store import privacy as store
from callrouter.store.database import Executor

__all__ = [
    "CLI",
    "RETENTION",
    "SERVER",
    "key_actor",
    "record",
]

CLI = "cli"
"""The actor for ``callrouter privacy ...`` and ``callrouter purge``."""
RETENTION = "retention"
"""The actor for the daily purge inside ``callrouter serve``."""
SERVER = "server"
"""The actor for what the server does by itself at start (creating the secret)."""

ERASURE = "erasure"
EXPORT = "export"
RECTIFICATION = "rectification"
OBJECTION = "suppression.objection"
CONSENT_WITHDRAWN = "suppression.recording_consent_withdrawn"
RETENTION_PURGE = "retention.purge"
SECRET_CREATED = "secret.created"  # noqa: S105 (an action name, not a secret)


def key_actor(key_id: UUID) -> str:
    """The actor for a request made with an API key."""
    return f"key:{key_id}"


async def record(
    db: Executor,
    *,
    at: datetime,
    actor: str,
    action: str,
    counts: Mapping[str, int],
    client_id: UUID | None = None,
    subject: Subject | None = None,
    hasher: SubjectHasher | None = None,
    request_id: UUID | None = None,
) -> None:
    """Append one entry.

    :param action: lower-case words and dots: ``erasure``, ``export``, ``retention.purge``,
        ``secret.created``; the recordings service may add its key operations
        (``vault.key_rotated``...).
    :param subject: hashed with ``hasher`` for ``client_id``; never stored as given.
    """
    digest = None
    if subject is not None:
        if hasher is None or client_id is None:
            raise ValueError("a subject is audited as its keyed hash: pass hasher and client_id")
        digest = hasher.digest(client_id, subject)
    await store.insert_audit(
        db,
        at=at,
        actor=actor,
        action=action,
        client_id=client_id,
        subject_kind=subject.kind if subject else None,
        subject_hash=digest,
        request_id=request_id,
        counts=counts,
    )
