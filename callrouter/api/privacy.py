"""/v1/privacy: data subjects' requests, their exports, the suppression list, the audit log,
and each client's retention periods.

A request names its subject once: a phone number, a call id or a session id. The register
keeps only a keyed hash of it, so a request carried out later (``/fulfil``, ``/export``) is
given the subject again and the server checks it against the hash.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any
from uuid import UUID

from aiohttp import web

from callrouter.api.clients import resolve_owner
from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_response,
    page_schema,
)
from callrouter.api.fields import CLIENT_ID, E164_INPUT, timestamp, uuid
from callrouter.api.problems import FieldError, Problem, invalid, invalid_fields, not_found
from callrouter.api.schema import Field, FieldInvalid, Schema
from callrouter.api.state import DATABASE, PRIVACY
from callrouter.numbering import NumberFormatError
from callrouter.privacy import audit
from callrouter.privacy.erasure import SUPPRESSION_NOTICE_NONE
from callrouter.privacy.rectification import (
    CallCorrection,
    Correction,
    FormCorrection,
    NotTheSubjects,
)
from callrouter.privacy.register import KINDS, RESPONSE_DAYS, is_overdue
from callrouter.privacy.rights import PrivacyRights, RequestRefused
from callrouter.privacy.subjects import Subject
from callrouter.privacy.suppression import REASONS
from callrouter.store import privacy as store
from callrouter.store.privacy import AuditRow, ClientRetention, PrivacyRequest, Suppression

log = logging.getLogger(__name__)

TAG = "privacy"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid", "maxLength": 36}

# -- the subject --------------------------------------------------------------------------------

SUBJECT_NAMES = ("phone", "call_id", "session_id")
SUBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Whom the request is about: exactly one of a phone number (E.164, spaces "
    "and punctuation allowed: +44 7700 900123), a call id or a visitor session id.",
    "properties": {
        "phone": {"type": "string", "maxLength": 40, "pattern": E164_INPUT},
        "call_id": _UUID_SCHEMA,
        "session_id": _UUID_SCHEMA,
    },
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}


def _text(value: Any, path: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise FieldInvalid(path, "must be a string")
    if "\x00" in value:
        raise FieldInvalid(path, "must not contain NUL characters")
    if len(value) > max_length:
        raise FieldInvalid(path, f"must be at most {max_length} characters")
    return value


def _uuid(value: Any, path: str) -> UUID:
    if not _UUID.match(_text(value, path, 36)):
        raise FieldInvalid(path, "must be a UUID")
    return UUID(value)


def _phone(value: Any, path: str) -> str:
    text = _text(value, path, 40)
    try:
        e164 = Subject.phone(text).value
    except NumberFormatError as exc:
        raise FieldInvalid(path, str(exc)) from None
    if not re.search(E164_INPUT, text):
        raise FieldInvalid(path, f"must match the pattern {E164_INPUT}")
    return e164


def _subject(value: dict[str, Any]) -> Subject:
    for name in value:
        if name not in SUBJECT_NAMES:
            raise FieldInvalid(f"subject.{str(name)[:64]}", "unknown field")
    if len(value) != 1:
        raise FieldInvalid("subject", "must name exactly one of phone, call_id, session_id")
    ((name, raw),) = value.items()
    if name == "phone":
        return Subject("phone", _phone(raw, "subject.phone"))
    if name == "call_id":
        return Subject.call(_uuid(raw, "subject.call_id"))
    return Subject.session(_uuid(raw, "subject.session_id"))


@dataclass(frozen=True)
class _Documented(Field):
    """A field whose JSON schema is written out in full (nested objects the Field type cannot
    describe); its ``check`` enforces the same rules and names the nested field at fault."""

    schema: dict[str, Any] = dataclass_field(default_factory=dict, compare=False)

    def json_schema(self) -> dict[str, Any]:
        return {**self.schema, "description": self.doc}


SUBJECT = _Documented(
    "subject",
    "object",
    SUBJECT_SCHEMA["description"],
    required=True,
    check=_subject,
    schema=SUBJECT_SCHEMA,
)

# -- corrections (rectification) ----------------------------------------------------------------

CORRECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "call_id": _UUID_SCHEMA,
        "caller_number": {"type": ["string", "null"], "maxLength": 40, "pattern": E164_INPUT},
        "form_id": _UUID_SCHEMA,
        "fields": {
            "type": "object",
            "maxProperties": 50,
            "additionalProperties": {"type": ["string", "null"], "maxLength": 2000},
        },
    },
    "additionalProperties": False,
}
CORRECTIONS_SCHEMA: dict[str, Any] = {"type": "array", "maxItems": 100, "items": CORRECTION_SCHEMA}


def _correction(item: Any, path: str) -> Correction:
    if not isinstance(item, dict):
        raise FieldInvalid(path, "must be an object")
    for name in item:
        if name not in CORRECTION_SCHEMA["properties"]:
            raise FieldInvalid(f"{path}.{str(name)[:64]}", "unknown field")
    if ("call_id" in item) == ("form_id" in item):
        raise FieldInvalid(path, "must name either call_id or form_id")
    if "call_id" in item:
        if "fields" in item:
            raise FieldInvalid(f"{path}.fields", "belongs with form_id")
        if "caller_number" not in item:
            raise FieldInvalid(f"{path}.caller_number", "is required with call_id")
        number = item["caller_number"]
        e164 = None if number is None else _phone(number, f"{path}.caller_number")
        return CallCorrection(_uuid(item["call_id"], f"{path}.call_id"), e164)
    if "caller_number" in item:
        raise FieldInvalid(f"{path}.caller_number", "belongs with call_id")
    fields = item.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise FieldInvalid(f"{path}.fields", "is required with form_id: the fields to correct")
    if len(fields) > 50:
        raise FieldInvalid(f"{path}.fields", "must have at most 50 entries")
    values: dict[str, str | None] = {}
    for key, value in fields.items():
        if "\x00" in key or not key or len(key) > 64:
            raise FieldInvalid(f"{path}.fields", f"key {key[:64]!r} must be 1 to 64 characters")
        values[key] = None if value is None else _text(value, f"{path}.fields.{key}", 2000)
    return FormCorrection(_uuid(item["form_id"], f"{path}.form_id"), values)


def _corrections(items: list[Any]) -> list[Correction]:
    return [_correction(item, f"corrections[{i}]") for i, item in enumerate(items)]


CORRECTIONS = _Documented(
    "corrections",
    "array",
    "Rectification only: what to correct. Each names one of the subject's calls with its "
    "correct caller_number (null removes it), or one of the subject's form submissions with "
    "the fields to set (a null value removes the field).",
    max_items=100,
    check=_corrections,
    schema=CORRECTIONS_SCHEMA,
)

# -- requests -----------------------------------------------------------------------------------

CREATE = Schema(
    CLIENT_ID,
    Field(
        "kind",
        "string",
        "access (an export of everything held), erasure, objection (suppression), "
        "rectification or consent_withdrawal (to recording).",
        required=True,
        choices=KINDS,
    ),
    SUBJECT,
    timestamp(
        "received_at",
        f"When the request reached you (default: now); the answer is due {RESPONSE_DAYS} days "
        "later.",
    ),
    Field(
        "carry_out",
        "boolean",
        "Carry the request out now (default true). False registers it open, to check the "
        "requester's identity first; carry it out later with /fulfil. Access requests are "
        "carried out by downloading their export.",
    ),
    CORRECTIONS,
)
# The subject is checked by the handler, after the request is found, so a request of another
# client is a 404 whatever the body says.
FULFIL = Schema(replace(SUBJECT, required=False), CORRECTIONS)
EXPORT = Schema(replace(SUBJECT, required=False))
LIST_QUERY = Schema(
    *PAGE_QUERY.fields,
    Field(
        "status",
        "string",
        "open, overdue (open past its due date) or done.",
        choices=("open", "overdue", "done"),
    ),
    uuid("client_id", "Only this client's (operator keys).", nullable=False),
)

_TIME = {"type": "string", "format": "date-time"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
REQUEST_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "client_id",
        "kind",
        "subject_kind",
        "subject_hash",
        "received_at",
        "due_at",
        "status",
        "overdue",
        "outcome",
        "completed_at",
        "requested_by",
        "created_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "subject_kind": {"type": "string", "enum": ["phone", "call", "session"]},
        "subject_hash": {
            "type": "string",
            "description": "HMAC-SHA256 of the subject keyed with the server secret (hex); "
            "the subject itself is never stored.",
        },
        "received_at": _TIME,
        "due_at": _TIME,
        "status": {"type": "string", "enum": ["open", "done"]},
        "overdue": {"type": "boolean"},
        "outcome": {
            "type": ["object", "null"],
            "description": "What was done: counts of items and notices, never personal data. "
            "An erasure's receipt is under receipt.",
        },
        "completed_at": _MAYBE_TIME,
        "requested_by": {"type": "string"},
        "created_at": _TIME,
    },
    "additionalProperties": False,
}


def request_view(request: PrivacyRequest, rights: PrivacyRights) -> dict[str, Any]:
    return {
        "id": request.id,
        "client_id": request.client_id,
        "kind": request.kind,
        "subject_kind": request.subject_kind,
        "subject_hash": request.subject_hash.hex(),
        "received_at": request.received_at,
        "due_at": request.due_at,
        "status": request.status,
        "overdue": is_overdue(request, rights.clock()),
        "outcome": request.outcome,
        "completed_at": request.completed_at,
        "requested_by": request.requested_by,
        "created_at": request.created_at,
    }


def _rights(ctx: RequestContext) -> PrivacyRights:
    rights = ctx.app().get(PRIVACY)
    if rights is None:
        raise Problem(503, "privacy requests are not served by this process")
    return rights


def _actor(ctx: RequestContext) -> str:
    assert ctx.principal is not None
    return audit.key_actor(ctx.principal.key_id)


def _refused(exc: RequestRefused) -> Problem:
    if exc.status == 422:
        return invalid(exc.field, exc.reason)
    return Problem(exc.status, str(exc), [FieldError(exc.field, exc.reason)])


def _not_the_subjects(exc: NotTheSubjects) -> Problem:
    return invalid(f"corrections[{exc.index}].{exc.field}", str(exc))


async def _request(ctx: RequestContext) -> PrivacyRequest:
    request = await store.get_request(
        ctx.app()[DATABASE], ctx.path_id("request_id", "privacy request"), ctx.scope
    )
    if request is None:
        raise not_found("privacy request")
    return request


def _given_subject(ctx: RequestContext) -> Subject:
    subject: Subject | None = ctx.body.get("subject")
    if subject is None:
        raise invalid_fields([FieldError("subject", "is required")])
    return subject


async def create(ctx: RequestContext) -> web.Response:
    rights = _rights(ctx)
    body = ctx.body
    owner = await resolve_owner(ctx, body.get("client_id"))
    try:
        request = await rights.file(
            owner,
            body["kind"],
            body["subject"],
            actor=_actor(ctx),
            received_at=body.get("received_at"),
            carry_out=body.get("carry_out", True),
            corrections=body.get("corrections", ()),
        )
    except RequestRefused as exc:
        raise _refused(exc) from None
    except NotTheSubjects as exc:
        raise _not_the_subjects(exc) from None
    return json_response(request_view(request, rights), 201)


async def list_(ctx: RequestContext) -> web.Response:
    rights = _rights(ctx)
    after, limit = page_args(ctx)
    rows = await store.list_requests(
        ctx.app()[DATABASE],
        ctx.scope,
        client_id=ctx.query.get("client_id"),
        status=ctx.query.get("status"),
        now=rights.clock(),
        after=after,
        limit=limit + 1,
    )
    return page_response(rows, limit, lambda r: request_view(r, rights))


async def get(ctx: RequestContext) -> web.Response:
    rights = _rights(ctx)
    return json_response(request_view(await _request(ctx), rights))


async def fulfil(ctx: RequestContext) -> web.Response:
    rights = _rights(ctx)
    request = await _request(ctx)
    subject = _given_subject(ctx)
    try:
        done = await rights.fulfil(
            request, subject, actor=_actor(ctx), corrections=ctx.body.get("corrections", ())
        )
    except RequestRefused as exc:
        raise _refused(exc) from None
    except NotTheSubjects as exc:
        raise _not_the_subjects(exc) from None
    return json_response(request_view(done, rights))


async def export(ctx: RequestContext) -> web.StreamResponse:
    rights = _rights(ctx)
    request = await _request(ctx)
    subject = _given_subject(ctx)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="privacy-export-{request.id}.zip"',
        }
    )

    async def write(chunk: bytes) -> None:
        if not response.prepared:
            await response.prepare(ctx.request)
        if chunk:
            await response.write(chunk)

    try:
        await rights.export(request, subject, write, actor=_actor(ctx))
    except RequestRefused as exc:
        raise _refused(exc) from None
    except Exception:
        if not response.prepared:
            raise
        # Half an archive has gone out: end the connection without the final chunk, so the
        # client sees a broken download rather than a complete-looking, truncated zip.
        log.exception("privacy: the export of request %s failed while streaming", request.id)
        if ctx.request.transport is not None:
            ctx.request.transport.close()
    return response


# -- suppression list and audit log -------------------------------------------------------------

SUPPRESSIONS_QUERY = Schema(
    *PAGE_QUERY.fields,
    Field("reason", "string", "Only entries for this reason.", choices=REASONS),
    uuid("client_id", "Only this client's (operator keys).", nullable=False),
)
SUPPRESSION_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["id", "client_id", "subject_hash", "reason", "request_id", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "subject_hash": {"type": "string", "description": "Keyed hash of the number (hex)."},
        "reason": {"type": "string", "enum": list(REASONS)},
        "request_id": {"type": ["string", "null"], "format": "uuid"},
        "created_at": _TIME,
    },
    "additionalProperties": False,
}


def suppression_view(entry: Suppression) -> dict[str, Any]:
    return {
        "id": entry.id,
        "client_id": entry.client_id,
        "subject_hash": entry.subject_hash.hex(),
        "reason": entry.reason,
        "request_id": entry.request_id,
        "created_at": entry.created_at,
    }


def _filters(ctx: RequestContext, *names: str) -> dict[str, Any]:
    return {name: ctx.query[name] for name in names if name in ctx.query}


async def suppressions(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await store.SUPPRESSIONS.list_page(
        ctx.app()[DATABASE], ctx.scope, after, limit + 1, _filters(ctx, "client_id", "reason")
    )
    return page_response(rows, limit, suppression_view)


AUDIT_QUERY = Schema(
    *PAGE_QUERY.fields,
    Field("action", "string", "Only entries of this action (erasure, export...).", max_length=64),
    uuid("client_id", "Only this client's (operator keys).", nullable=False),
)
AUDIT_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "at",
        "actor",
        "action",
        "client_id",
        "subject_kind",
        "subject_hash",
        "request_id",
        "counts",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "at": _TIME,
        "actor": {"type": "string", "description": "key:<API key id>, cli, retention, server."},
        "action": {"type": "string"},
        "client_id": {"type": ["string", "null"], "format": "uuid"},
        "subject_kind": {"type": ["string", "null"]},
        "subject_hash": {"type": ["string", "null"]},
        "request_id": {"type": ["string", "null"], "format": "uuid"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "additionalProperties": False,
}


def audit_view(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "client_id": row.client_id,
        "subject_kind": row.subject_kind,
        "subject_hash": row.subject_hash.hex() if row.subject_hash is not None else None,
        "request_id": row.request_id,
        "counts": row.counts,
    }


async def audit_log(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    rows = await store.AUDIT.list_page(
        ctx.app()[DATABASE], ctx.scope, after, limit + 1, _filters(ctx, "client_id", "action")
    )
    return page_response(rows, limit, audit_view)


# -- retention ----------------------------------------------------------------------------------


def _days(name: str, what: str) -> Field:
    return Field(
        name,
        "integer",
        f"Days {what} are kept; null: the server's default.",
        nullable=True,
        minimum=1,
        maximum=36500,
    )


RETENTION_UPDATE = Schema(
    _days("recordings_retention_days", "recordings"),
    _days(
        "data_retention_days",
        "call records, visitor sessions, form submissions and webhook deliveries",
    ),
)
_DAYS = {"type": ["integer", "null"]}
RETENTION_VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "client_id",
        "recordings_retention_days",
        "data_retention_days",
        "effective_recordings_retention_days",
        "effective_data_retention_days",
    ],
    "properties": {
        "client_id": {"type": "string", "format": "uuid"},
        "recordings_retention_days": _DAYS,
        "data_retention_days": _DAYS,
        "effective_recordings_retention_days": {"type": "integer"},
        "effective_data_retention_days": {"type": "integer"},
    },
    "additionalProperties": False,
}


def retention_view(own: ClientRetention, rights: PrivacyRights) -> dict[str, Any]:
    return {
        "client_id": own.client_id,
        "recordings_retention_days": own.recordings_retention_days,
        "data_retention_days": own.data_retention_days,
        "effective_recordings_retention_days": own.recordings_retention_days
        or rights.defaults.recordings_days,
        "effective_data_retention_days": own.data_retention_days or rights.defaults.data_days,
    }


async def get_retention(ctx: RequestContext) -> web.Response:
    rights = _rights(ctx)
    own = await store.client_retention(
        ctx.app()[DATABASE], ctx.path_id("client_id", "client"), ctx.scope
    )
    if own is None:
        raise not_found("client")
    return json_response(retention_view(own, rights))


async def update_retention(ctx: RequestContext) -> web.Response:
    rights = _rights(ctx)
    own = await store.set_client_retention(
        ctx.app()[DATABASE], ctx.path_id("client_id", "client"), ctx.scope, ctx.body
    )
    if own is None:
        raise not_found("client")
    return json_response(retention_view(own, rights))


# -- routes -------------------------------------------------------------------------------------

REQUESTS = "/v1/privacy/requests"
REQUEST = REQUESTS + "/{request_id}"
ERASURE_DOC = (
    "An erasure deletes the subject's recordings (their keys and files are destroyed, so "
    "copies of the files cannot be decrypted), calls, visits and form submissions, and the "
    "webhook deliveries about them, keeping only anonymous daily counts so reports stay true; "
    "its receipt (outcome.receipt) counts what was removed, and repeating it removes nothing "
    "more. " + SUPPRESSION_NOTICE_NONE + " (An erasure by phone number takes the number off "
    "the suppression list.)"
)
ENDPOINTS = [
    Endpoint(
        "POST",
        REQUESTS,
        create,
        "createPrivacyRequest",
        "Register a data subject's request and carry it out",
        TAG,
        body=CREATE,
        response=REQUEST_VIEW,
        status=201,
        errors=(409, 503),
        description=(
            f"Every request is registered with its due date ({RESPONSE_DAYS} days after "
            "receipt). Objection: the number goes on the suppression list (kept as a keyed "
            "hash): its calls are still connected but not recorded, not attributed and stored "
            "and sent without the number. Consent withdrawal: calls are connected and "
            "attributed but never recorded. Rectification: corrects caller numbers and form "
            "fields. Access: download the export with POST .../{request_id}/export. " + ERASURE_DOC
        ),
    ),
    Endpoint(
        "GET",
        REQUESTS,
        list_,
        "listPrivacyRequests",
        "The request register (status=open or overdue for what needs answering)",
        TAG,
        query=LIST_QUERY,
        response=page_schema(REQUEST_VIEW),
        errors=(503,),
    ),
    Endpoint(
        "GET",
        REQUEST,
        get,
        "getPrivacyRequest",
        "Get a privacy request",
        TAG,
        response=REQUEST_VIEW,
        errors=(503,),
    ),
    Endpoint(
        "POST",
        REQUEST + "/fulfil",
        fulfil,
        "fulfilPrivacyRequest",
        "Carry out a request registered open, given its subject again",
        TAG,
        body=FULFIL,
        response=REQUEST_VIEW,
        errors=(409, 503),
        description="The subject must be the one the request was registered for. " + ERASURE_DOC,
    ),
    Endpoint(
        "POST",
        REQUEST + "/export",
        export,
        "exportPrivacyRequest",
        "Download everything held about an access request's subject (zip)",
        TAG,
        body=EXPORT,
        response={"type": "string", "format": "binary"},
        response_type="application/zip",
        errors=(409, 503),
        description="A zip streamed as it is written: index.json (every file with its size "
        "and SHA-256), calls/, sessions/, forms/ (JSON), recordings/ (the decrypted audio), "
        "suppression.json, requests.json and audit.json. The first download marks the request "
        "done; each download is audited.",
    ),
    Endpoint(
        "GET",
        "/v1/suppressions",
        suppressions,
        "listSuppressions",
        "The suppression list: keyed hashes of numbers, why, and since when",
        TAG,
        query=SUPPRESSIONS_QUERY,
        response=page_schema(SUPPRESSION_VIEW),
        description="Entries are added by objection and consent-withdrawal requests and "
        "removed by an erasure of the number.",
    ),
    Endpoint(
        "GET",
        "/v1/privacy/audit",
        audit_log,
        "listPrivacyAudit",
        "Every deletion, export, correction and key operation, with who, when and how many",
        TAG,
        query=AUDIT_QUERY,
        response=page_schema(AUDIT_VIEW),
    ),
    Endpoint(
        "GET",
        "/v1/clients/{client_id}/retention",
        get_retention,
        "getRetention",
        "A client's retention periods",
        TAG,
        response=RETENTION_VIEW,
        errors=(503,),
    ),
    Endpoint(
        "PATCH",
        "/v1/clients/{client_id}/retention",
        update_retention,
        "updateRetention",
        "Set a client's retention periods (null: the server's default)",
        TAG,
        body=RETENTION_UPDATE,
        partial_body=True,
        response=RETENTION_VIEW,
        errors=(503,),
        description="Data past its period is removed by the daily purge the way an erasure "
        "removes it.",
    ),
]
