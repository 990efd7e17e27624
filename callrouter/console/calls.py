"""The call log (filters, caller search, keyset pages, CSV export of the filtered set), a call's
detail (timeline, attribution, the recording player) and the player's audio and waveform.

Caller numbers are masked for roles without ``calls.caller_number`` in the page, the CSV and
the search alike (such a role cannot search by number). Audio needs ``recordings.listen``.
Every export and every start of listening goes into the audit log.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from aiohttp import web

from callrouter.api.problems import Problem
from callrouter.api.recordings import CONTENT_TYPES, byte_range
from callrouter.api.state import RECORDINGS
from callrouter.console.audit import record
from callrouter.console.overview import day_range
from callrouter.console.pages import Page, path_id, render
from callrouter.console.permissions import (
    ConsoleUser,
    Permission,
    current_user,
    mask_caller_number,
    require,
)
from callrouter.console.scope import client_of
from callrouter.console.state import CONSOLE
from callrouter.recordings import UNREADABLE
from callrouter.store import call_log, calls, recordings
from callrouter.store import sessions as visits
from callrouter.store.call_log import CallLogEntry, CallLogFilter
from callrouter.store.numbers import NUMBERS

log = logging.getLogger(__name__)

PAGE_SIZE = 50
DISPOSITIONS = ("answered", "busy", "no_answer", "failed", "cancelled", "rejected", "interrupted")
CSV_COLUMNS = (
    "id",
    "started_at",
    "tracking_number",
    "caller_number",
    "source",
    "medium",
    "campaign",
    "landing_page",
    "disposition",
    "answered_at",
    "ended_at",
    "talk_seconds",
    "recorded",
)


def caller_of(user: ConsoleUser, number: str | None) -> str:
    """A caller's number as this user may see it."""
    if not number:
        return "withheld"
    return number if user.may(Permission.CALLS_CALLER_NUMBER) else mask_caller_number(number)


def _uuid(query: Any, field: str) -> UUID | None:
    text = query.get(field, "")
    if not text:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{field}: not an id") from None


def log_filter(request: web.Request, user: ConsoleUser) -> CallLogFilter:
    """The call log's filters from the query string; a 400 page naming a wrong field."""
    query = request.query
    started_from = started_before = None
    if query.get("from") or query.get("to"):
        today = datetime.fromtimestamp(request.app[CONSOLE].clock(), UTC).date()
        first, last = day_range(query, today)
        started_from = datetime(first.year, first.month, first.day, tzinfo=UTC)
        started_before = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    disposition = query.get("disposition") or None
    if disposition is not None and disposition not in DISPOSITIONS:
        raise web.HTTPBadRequest(reason="disposition: not one of " + ", ".join(DISPOSITIONS))
    recorded = {"": None, "yes": True, "no": False}.get(query.get("recorded", ""), "bad")
    if recorded == "bad":
        raise web.HTTPBadRequest(reason="recorded: yes or no")
    caller = query.get("caller", "").strip() or None
    if caller is not None:
        if not user.may(Permission.CALLS_CALLER_NUMBER):
            raise web.HTTPForbidden(reason="caller: your role may not search by caller number")
        if sum(ch.isdigit() for ch in caller) < 3 or any(
            not (ch.isdigit() or ch in "+ -().") for ch in caller
        ):
            raise web.HTTPBadRequest(reason="caller: at least 3 digits of a phone number")
    return CallLogFilter(
        started_from=started_from,
        started_before=started_before,
        number_id=_uuid(query, "number"),
        source=query.get("source") or None,
        campaign=query.get("campaign") or None,
        disposition=disposition,
        recorded=recorded if isinstance(recorded, bool) else None,
        caller=caller,
    )


def _filter_query(request: web.Request) -> str:
    """The query string of the filters alone (for pager and export links)."""
    kept = {
        k: v
        for k, v in request.query.items()
        if k in ("from", "to", "number", "source", "campaign", "disposition", "recorded", "caller")
        and v
    }
    return urlencode(kept)


def talk_seconds(call: calls.Call) -> int | None:
    if call.answered_at is None or call.ended_at is None:
        return None
    return int((call.ended_at - call.answered_at).total_seconds())


@require(Permission.CALLS_READ)
async def listing(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    client_id = client_of(request)
    where = log_filter(request, user)
    before, after = _uuid(request.query, "before"), _uuid(request.query, "after")
    # One more than a page says whether there is another page in that direction.
    entries = await call_log.page(
        console.database, client_id, where, before=before, after=after, limit=PAGE_SIZE + 1
    )
    more = len(entries) > PAGE_SIZE
    if after is not None:
        entries = entries[-PAGE_SIZE:] if more else entries
        older, newer = True, more
    else:
        entries = entries[:PAGE_SIZE]
        older, newer = more, before is not None
    numbers = await NUMBERS.list_page(console.database, client_id, None, 500)
    return await render(
        request,
        "calls.html",
        {
            "entries": [_row(user, entry) for entry in entries],
            "query": request.query,
            "filters": _filter_query(request),
            "older": entries[-1].call.id if older and entries else None,
            "newer": entries[0].call.id if newer and entries else None,
            "numbers": numbers,
            "dispositions": DISPOSITIONS,
            "may_search_caller": user.may(Permission.CALLS_CALLER_NUMBER),
        },
    )


def _row(user: ConsoleUser, entry: CallLogEntry) -> dict[str, Any]:
    call = entry.call
    return {
        "id": call.id,
        "started_at": call.started_at,
        "tracking_number": call.tracking_number,
        "caller": caller_of(user, call.caller_number),
        "source": call.attribution.get("source") or "(none)",
        "campaign": call.attribution.get("campaign") or "",
        "disposition": call.disposition or call.state,
        "talk_seconds": talk_seconds(call),
        "recorded": entry.recording_id is not None,
    }


@require(Permission.CALLS_READ)
async def export(request: web.Request) -> web.StreamResponse:
    """The filtered set as CSV, streamed from a database cursor as it is read."""
    console = request.app[CONSOLE]
    user = current_user(request)
    client_id = client_of(request)
    where = log_filter(request, user)
    await record(request, "calls.export", details={"filtered": bool(_filter_query(request))})
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="calls.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async with console.database.acquire() as connection:
        async for entry in call_log.stream(connection, client_id, where):
            call = entry.call
            attribution = call.attribution
            writer.writerow(
                [
                    call.id,
                    call.started_at.isoformat(),
                    call.tracking_number,
                    caller_of(user, call.caller_number),
                    *(_cell(attribution.get(k)) for k in ("source", "medium", "campaign")),
                    _cell(attribution.get("landing_page")),
                    call.disposition or call.state,
                    call.answered_at.isoformat() if call.answered_at else "",
                    call.ended_at.isoformat() if call.ended_at else "",
                    talk_seconds(call) if talk_seconds(call) is not None else "",
                    "yes" if entry.recording_id else "no",
                ]
            )
            if buffer.tell() > 64 * 1024:
                await response.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


def _cell(value: object) -> str:
    """A spreadsheet would run a cell that starts with = + - @ as a formula (CSV injection):
    attribution comes from visitors' URLs, so such a value is prefixed with a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@require(Permission.CALLS_READ)
async def detail(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    user = current_user(request)
    client_id = client_of(request)
    call = await calls.get(console.database, path_id(request, "call_id", "call"), client_id)
    if call is None:
        raise web.HTTPNotFound(reason="no such call")
    attempts = (await calls.attempts_of(console.database, [call.id]))[call.id]
    visit = (
        await visits.get_scoped(console.database, call.session_id, client_id)
        if call.session_id
        else None
    )
    found = await recordings.list_page(
        console.database, client_id, None, 1, recordings.RecordingFilter(call_id=call.id)
    )
    return await render(
        request,
        "call.html",
        {
            "call": call,
            "caller": caller_of(user, call.caller_number),
            "timeline": timeline(call, attempts, visit),
            "attribution": sorted(call.attribution.items()),
            "recording": found[0] if found else None,
            "may_listen": user.may(Permission.RECORDINGS_LISTEN),
            "talk_seconds": talk_seconds(call),
        },
    )


def timeline(
    call: calls.Call, attempts: list[calls.CallAttempt], visit: visits.SessionRecord | None
) -> list[tuple[datetime, str]]:
    """What happened, in order: the visit and its lease, the INVITE, each destination tried,
    the answer and the end."""
    events: list[tuple[datetime, str]] = []
    if visit is not None:
        page = visit.attribution.get("landing_page") or "a page"
        events.append(
            (
                visit.created_at,
                f"Visit to {page} (source {visit.attribution.get('source') or 'direct'})",
            )
        )
        if visit.number:
            events.append((visit.created_at, f"Number {visit.number} leased to the visit"))
    events.append(
        (call.started_at, f"INVITE to {call.tracking_number} from trunk {call.trunk or '?'}")
    )
    for attempt in attempts:
        events.append((attempt.started_at, f"Destination {attempt.seq} tried"))
        if attempt.ringing_at:
            events.append((attempt.ringing_at, f"Destination {attempt.seq} ringing"))
        if attempt.answered_at:
            events.append((attempt.answered_at, f"Destination {attempt.seq} answered"))
        if attempt.ended_at:
            status = (
                f" ({attempt.sip_status} {attempt.reason or ''})".rstrip()
                if attempt.sip_status
                else ""
            )
            events.append(
                (
                    attempt.ended_at,
                    f"Destination {attempt.seq}: {attempt.result or 'ended'}{status}",
                )
            )
    if call.answered_at:
        events.append((call.answered_at, "Call answered"))
    if call.ended_at:
        by = f", hung up by the {call.hangup_by}" if call.hangup_by else ""
        events.append((call.ended_at, f"Call ended: {call.disposition}{by}"))
    # A stable sort keeps same-instant events in the order they happen.
    return sorted(events, key=lambda event: event[0])


async def _recording(request: web.Request) -> recordings.Recording:
    console = request.app[CONSOLE]
    recording_id = path_id(request, "recording_id", "recording")
    found = await recordings.get(console.database, recording_id, client_of(request))
    if found is None:
        raise web.HTTPNotFound(reason="no such recording")
    return found


@require(Permission.RECORDINGS_LISTEN)
async def peaks(request: web.Request) -> web.StreamResponse:
    recording = await _recording(request)
    value = await recordings.peaks(request.app[CONSOLE].database, recording.id, recording.client_id)
    return web.json_response(value, headers={"Cache-Control": "private, max-age=3600"})


@require(Permission.RECORDINGS_LISTEN)
async def audio(request: web.Request) -> web.StreamResponse:
    """The decrypted audio with HTTP ranges (the player seeks with them). A request from the
    start is a listen, and goes into the audit log; the ranges a seek asks for are not."""
    recording = await _recording(request)
    service = request.app.get(RECORDINGS)
    if service is None:
        raise web.HTTPNotFound(reason="this server keeps no recordings")
    try:
        reader = await service.open(recording.id, recording.path)
    except UNREADABLE as exc:
        log.warning("console: recording %s unreadable: %s", recording.id, type(exc).__name__)
        raise web.HTTPInternalServerError(reason="the recording cannot be decrypted") from None
    try:
        size = reader.plaintext_size
        try:
            wanted = byte_range(request.headers.get("Range"), size)
        except Problem:
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"}
            ) from None
        start, end = wanted or (0, size)
        if wanted and end == size:
            # An open-ended range gets a bounded part (RFC 9110 §14.4 lets the answer say which
            # part it holds): a seek in a long recording then decrypts only what is near it.
            end = min(size, start + request.app[CONSOLE].config.audio_chunk_bytes)
        if start == 0:
            await record(request, "recording.listen", target=str(recording.id))
        served = recordings.served_format(recording.format)
        response = web.StreamResponse(status=206 if wanted else 200)
        response.content_type = CONTENT_TYPES[served]
        response.content_length = end - start
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Cache-Control"] = "private, no-store"
        if wanted:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        await response.prepare(request)
        async for chunk in service.chunks(reader, start, end):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        reader.close()


PAGES = [
    Page("/calls", "calls", get=listing),
    Page("/calls.csv", "calls_csv", get=export),
    Page("/calls/{call_id}", "call", get=detail),
    Page("/recordings/{recording_id}/audio", "recording_audio", get=audio),
    Page("/recordings/{recording_id}/peaks", "recording_peaks", get=peaks),
]
