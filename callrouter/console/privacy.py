"""Privacy: the register of data subjects' requests with their due dates (overdue ones in red),
filing a request (an objection or erasure is carried out at once), fulfilling one filed earlier,
the export that answers an access request, the suppression list's size, and both audit logs:
operations on personal data, and console actions. Owners only (``privacy.manage``).

The register keeps no phone number, only its keyed hash: to fulfil or export a request, the
person handling it types the number again, and the rights service checks it is the same one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from callrouter.api.state import PRIVACY
from callrouter.console.audit import record
from callrouter.console.pages import Page, path_id, render, see_other
from callrouter.console.permissions import Permission, current_user, require
from callrouter.console.scope import client_of
from callrouter.console.state import CONSOLE
from callrouter.numbering import NumberFormatError
from callrouter.privacy.register import KINDS, RequestKind
from callrouter.privacy.rights import PrivacyRights, RequestRefused
from callrouter.privacy.subjects import Subject
from callrouter.store import console_audit
from callrouter.store import privacy as store

log = logging.getLogger(__name__)

FILED_KINDS: tuple[RequestKind, ...] = tuple(k for k in KINDS if k != "rectification")
"""Kinds the console files (a rectification needs corrections: the API takes them)."""
NOTICES = {"filed": "The request is registered.", "fulfilled": "The request is carried out."}


def _rights(request: web.Request) -> PrivacyRights:
    rights = request.app.get(PRIVACY)
    if rights is None:
        raise web.HTTPServiceUnavailable(reason="privacy requests are not served here")
    return rights


async def _page(request: web.Request, error: str = "", status: int = 200) -> web.StreamResponse:
    database = request.app[CONSOLE].database
    client_id = client_of(request)
    now = datetime.fromtimestamp(request.app[CONSOLE].clock(), UTC)
    requests = await store.list_requests(
        database, client_id, client_id=client_id, status=None, now=now, after=None, limit=500
    )
    return await render(
        request,
        "privacy.html",
        {
            "requests": requests[::-1],
            "now": now,
            "kinds": FILED_KINDS,
            "suppressed": await store.suppression_count(database, client_id),
            "audit": await store.recent_audit(database, client_id, 50),
            "console_audit": await console_audit.recent(database, client_id, 50),
            "error": error,
            "notice": NOTICES.get(request.query.get("done", ""), ""),
        },
        status=status,
    )


@require(Permission.PRIVACY_MANAGE)
async def register(request: web.Request) -> web.StreamResponse:
    return await _page(request)


def _phone(form: Any) -> Subject:
    try:
        return Subject.phone(str(form.get("phone", "")).strip())
    except NumberFormatError as exc:
        raise FormRefused(f"phone: {exc}") from None


class FormRefused(Exception):
    """The form cannot be carried out; the message names the field."""


@require(Permission.PRIVACY_MANAGE)
async def file(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    chosen = str(form.get("kind", ""))
    kind = next((k for k in FILED_KINDS if k == chosen), None)
    try:
        if kind is None:
            raise FormRefused("kind: one of " + ", ".join(FILED_KINDS))
        subject = _phone(form)
        filed = await _rights(request).file(
            client_of(request), kind, subject, actor=current_user(request).actor
        )
    except FormRefused as exc:
        return await _page(request, str(exc), 400)
    except RequestRefused as exc:
        return await _page(request, f"{exc.field}: {exc.reason}", exc.status)
    await record(request, "privacy.file", target=str(filed.id), details={"kind": kind})
    return see_other("/privacy?done=filed")


async def _request(request: web.Request) -> store.PrivacyRequest:
    request_id = path_id(request, "request_id", "request")
    found = await store.get_request(request.app[CONSOLE].database, request_id, client_of(request))
    if found is None:
        raise web.HTTPNotFound(reason="no such request")
    return found


@require(Permission.PRIVACY_MANAGE)
async def fulfil(request: web.Request) -> web.StreamResponse:
    privacy_request = await _request(request)
    form = await request.post()
    try:
        subject = _phone(form)
        await _rights(request).fulfil(privacy_request, subject, actor=current_user(request).actor)
    except FormRefused as exc:
        return await _page(request, str(exc), 400)
    except RequestRefused as exc:
        return await _page(request, f"{exc.field}: {exc.reason}", exc.status)
    await record(request, "privacy.fulfil", target=str(privacy_request.id))
    return see_other("/privacy?done=fulfilled")


@require(Permission.PRIVACY_MANAGE)
async def export(request: web.Request) -> web.StreamResponse:
    """The access request's export (a zip) streamed as it is made; marks the request done."""
    privacy_request = await _request(request)
    form = await request.post()
    try:
        subject = _phone(form)
    except FormRefused as exc:
        return await _page(request, str(exc), 400)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": (
                f'attachment; filename="privacy-export-{privacy_request.id}.zip"'
            ),
            "Cache-Control": "no-store",
        }
    )

    async def write(chunk: bytes) -> None:
        if not response.prepared:
            await response.prepare(request)
        if chunk:
            await response.write(chunk)

    await record(request, "privacy.export", target=str(privacy_request.id))
    try:
        await _rights(request).export(
            privacy_request, subject, write, actor=current_user(request).actor
        )
    except RequestRefused as exc:
        if response.prepared:
            raise
        return await _page(request, f"{exc.field}: {exc.reason}", exc.status)
    await write(b"")
    await response.write_eof()
    return response


PAGES = [
    Page("/privacy", "privacy", get=register, post=file),
    Page("/privacy/requests/{request_id}/fulfil", "privacy_fulfil", post=fulfil),
    Page("/privacy/requests/{request_id}/export", "privacy_export", post=export),
]
