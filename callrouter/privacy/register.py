"""The request register: every request of a data subject, with its due date and outcome.

The operator must answer within a month of receipt (GDPR art. 12(3)); the register takes that
as 30 days, lists what is open and what is overdue, and keeps what was done with each request
(counts and notices, never the personal data) as proof.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from uuid import UUID

from callrouter.privacy.subjects import Subject, SubjectHasher
from callrouter.store import privacy as store
from callrouter.store.database import Executor
from callrouter.store.privacy import PrivacyRequest

__all__ = [
    "KINDS",
    "RESPONSE_DAYS",
    "RequestKind",
    "complete",
    "due_at",
    "file_request",
    "is_overdue",
]

RequestKind = Literal["access", "erasure", "objection", "rectification", "consent_withdrawal"]
KINDS: tuple[RequestKind, ...] = get_args(RequestKind)
Status = Literal["open", "done"]
RESPONSE_DAYS = 30


def due_at(received_at: datetime) -> datetime:
    """When the answer is due: 30 days after receipt."""
    return received_at + timedelta(days=RESPONSE_DAYS)


def is_overdue(request: PrivacyRequest, now: datetime) -> bool:
    """Still open after its due date."""
    return request.status == "open" and request.due_at < now


async def file_request(
    db: Executor,
    hasher: SubjectHasher,
    client_id: UUID,
    kind: RequestKind,
    subject: Subject,
    *,
    received_at: datetime,
    actor: str,
) -> PrivacyRequest:
    """Record a request as received (status open); the subject is stored as its keyed hash."""
    return await store.insert_request(
        db,
        client_id=client_id,
        kind=kind,
        subject_kind=subject.kind,
        subject_hash=hasher.digest(client_id, subject),
        received_at=received_at,
        due_at=due_at(received_at),
        requested_by=actor,
    )


async def complete(
    db: Executor, request: PrivacyRequest, outcome: dict[str, Any], now: datetime
) -> PrivacyRequest:
    """Mark a request done with its outcome."""
    return await store.complete_request(db, request.id, request.client_id, outcome, now)
