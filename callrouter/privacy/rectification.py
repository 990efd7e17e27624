"""Rectification: correcting a subject's stored personal fields, with an audit record.

Two fields hold personal data a person may ask to correct: a call's caller number and a form
submission's field values. A correction must be about the subject's own rows (those an export
would show); each one also corrects the same value in the webhook deliveries still stored, so
the delivery log does not keep the wrong value. The audit counts what was corrected, never the
old or new values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from callrouter.privacy import audit
from callrouter.privacy.erasure import find_subject_rows
from callrouter.privacy.subjects import Subject, SubjectHasher
from callrouter.store import privacy as store
from callrouter.store.database import Executor

__all__ = ["CallCorrection", "Correction", "FormCorrection", "NotTheSubjects", "rectify"]


@dataclass(frozen=True, slots=True, repr=False)
class CallCorrection:
    """Set a call's caller number (E.164), or remove it (None)."""

    call_id: UUID
    caller_number: str | None

    def __repr__(self) -> str:
        return f"CallCorrection({self.call_id})"


@dataclass(frozen=True, slots=True, repr=False)
class FormCorrection:
    """Set form fields to new values; a None value removes the field."""

    form_id: UUID
    fields: Mapping[str, str | None]

    def __repr__(self) -> str:
        return f"FormCorrection({self.form_id}, {len(self.fields)} field(s))"


Correction = CallCorrection | FormCorrection


class NotTheSubjects(ValueError):
    """A correction names a row that is not about the request's subject.

    :param index: the correction's position in the request.
    """

    def __init__(self, index: int, what: str) -> None:
        super().__init__(f"is not one of this subject's {what}")
        self.index = index
        self.field = "call_id" if what == "calls" else "form_id"


async def rectify(
    db: Executor,
    hasher: SubjectHasher,
    client_id: UUID,
    subject: Subject,
    corrections: Sequence[Correction],
    *,
    actor: str,
    now: datetime,
    request_id: UUID | None = None,
) -> dict[str, int]:
    """Apply every correction in one transaction, or none; counts of what changed.

    :raises NotTheSubjects: naming the first correction that is about someone else's row (or
        a row that does not exist); nothing is changed then.
    """
    async with store.transaction(db) as connection:
        rows = await find_subject_rows(connection, client_id, subject)
        calls = forms = fields = 0
        for index, correction in enumerate(corrections):
            if isinstance(correction, CallCorrection):
                if correction.call_id not in rows.call_ids:
                    raise NotTheSubjects(index, "calls")
                await store.set_caller_number(
                    connection, client_id, correction.call_id, correction.caller_number
                )
                calls += 1
                fields += 1
            else:
                if correction.form_id not in rows.form_ids:
                    raise NotTheSubjects(index, "forms")
                (form,) = await store.forms_by_ids(connection, client_id, [correction.form_id])
                values = dict(form.fields)
                for name, value in correction.fields.items():
                    if value is None:
                        values.pop(name, None)
                    else:
                        values[name] = value
                await store.set_form_fields(connection, client_id, form.id, values)
                forms += 1
                fields += len(correction.fields)
        counts = {"calls": calls, "forms": forms, "fields": fields}
        await audit.record(
            connection,
            at=now,
            actor=actor,
            action=audit.RECTIFICATION,
            counts=counts,
            client_id=client_id,
            subject=subject,
            hasher=hasher,
            request_id=request_id,
        )
    return counts
