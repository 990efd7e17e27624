"""/v1/recordings: list, download (decrypted on the fly, with HTTP ranges), peaks, delete.

The audio is decrypted segment by segment as it is sent: nothing plaintext is written anywhere,
and a range request decrypts only the segments it needs.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from callrouter.api.endpoints import (
    PAGE_QUERY,
    Endpoint,
    RequestContext,
    json_response,
    page_args,
    page_response,
    page_schema,
)
from callrouter.api.fields import timestamp, uuid
from callrouter.api.problems import Problem, not_found
from callrouter.api.schema import Schema
from callrouter.api.state import DATABASE, RECORDINGS
from callrouter.store import recordings as store
from callrouter.store.recordings import view
from callrouter.vault import VaultError

TAG = "recordings"
CONTENT_TYPES = {"flac": "audio/flac", "wav": "audio/wav"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

LIST_QUERY = Schema(
    *PAGE_QUERY.fields,
    uuid("call_id", "Only the recording of this call.", nullable=False),
    uuid("number_id", "Only recordings of calls to this tracking number.", nullable=False),
    timestamp("from", "Recordings that started at or after this time."),
    timestamp("to", "Recordings that started before this time."),
)

_TIME = {"type": "string", "format": "date-time"}
VIEW: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "client_id",
        "call_id",
        "number_id",
        "format",
        "bytes",
        "duration_seconds",
        "interrupted",
        "truncated",
        "truncated_reason",
        "started_at",
        "ended_at",
        "created_at",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "client_id": {"type": "string", "format": "uuid"},
        "call_id": {"type": "string", "format": "uuid"},
        "number_id": {"type": ["string", "null"], "format": "uuid"},
        "format": {"type": "string", "enum": list(CONTENT_TYPES)},
        "bytes": {"type": "integer", "description": "Size of the decrypted audio file."},
        "duration_seconds": {"type": "number"},
        "interrupted": {
            "type": "boolean",
            "description": "Finalised after a crash from what had been written (up to ~2 s "
            "short at the end).",
        },
        "truncated": {
            "type": "boolean",
            "description": "The audio stops before the call did: the recordings disk filled up "
            "and what had been written was kept.",
        },
        "truncated_reason": {"type": ["string", "null"], "description": "Why, when truncated."},
        "started_at": _TIME,
        "ended_at": _TIME,
        "created_at": _TIME,
    },
    "additionalProperties": False,
}
PEAKS_VIEW: dict[str, Any] = {
    "type": "object",
    "description": "A waveform summary for players: per channel (0 = caller, 1 = callee), the "
    "minimum and maximum sample in each bucket, scaled to -1..1.",
}


async def list_(ctx: RequestContext) -> web.Response:
    after, limit = page_args(ctx)
    where = store.RecordingFilter(
        call_id=ctx.query.get("call_id"),
        number_id=ctx.query.get("number_id"),
        started_from=ctx.query.get("from"),
        started_before=ctx.query.get("to"),
    )
    rows = await store.list_page(ctx.app()[DATABASE], ctx.scope, after, limit + 1, where)
    return page_response(rows, limit, view)


async def _recording(ctx: RequestContext) -> store.Recording:
    recording = await store.get(
        ctx.app()[DATABASE], ctx.path_id("recording_id", "recording"), ctx.scope
    )
    if recording is None:
        raise not_found("recording")
    return recording


async def get(ctx: RequestContext) -> web.Response:
    return json_response(view(await _recording(ctx)))


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) asked for by a single-range ``Range`` header (RFC 9110 §14.1.2), or None
    for the whole file.

    :raises Problem: 416 when the range cannot be satisfied.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # other units, or several ranges: the whole file is a valid answer (§14.2)
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            raise _unsatisfiable(size)
        return max(0, size - int(last)), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> Problem:
    return Problem(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"})


async def audio(ctx: RequestContext) -> web.StreamResponse:
    recording = await _recording(ctx)
    service = ctx.app()[RECORDINGS]
    try:
        reader = await service.open(recording.id, recording.path)
    except (VaultError, OSError) as exc:
        raise Problem(500, f"recording cannot be decrypted: {exc}") from None
    try:
        size = reader.plaintext_size
        wanted = byte_range(ctx.request.headers.get("Range"), size)
        start, end = wanted or (0, size)
        response = web.StreamResponse(status=206 if wanted else 200)
        served = store.served_format(recording.format)
        response.content_type = CONTENT_TYPES[served]
        response.content_length = end - start
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Content-Disposition"] = f'attachment; filename="{recording.id}.{served}"'
        if wanted:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        await response.prepare(ctx.request)
        async for chunk in service.chunks(reader, start, end):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        reader.close()


async def peaks(ctx: RequestContext) -> web.Response:
    recording_id = ctx.path_id("recording_id", "recording")
    found = await store.peaks(ctx.app()[DATABASE], recording_id, ctx.scope)
    if found is None:
        raise not_found("recording")
    return json_response(found)


async def delete(ctx: RequestContext) -> web.Response:
    recording_id = ctx.path_id("recording_id", "recording")
    if not await store.delete(ctx.app()[DATABASE], recording_id, ctx.scope):
        raise not_found("recording")
    await ctx.app()[RECORDINGS].dispose_pending()
    return web.Response(status=204)


ITEM = "/v1/recordings/{recording_id}"
ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/recordings",
        list_,
        "listRecordings",
        "List recordings (by call, number or time)",
        TAG,
        query=LIST_QUERY,
        response=page_schema(VIEW),
    ),
    Endpoint("GET", ITEM, get, "getRecording", "Get a recording", TAG, response=VIEW),
    Endpoint(
        "GET",
        ITEM + "/audio",
        audio,
        "getRecordingAudio",
        "Download the decrypted audio (FLAC or WAV; Range requests supported)",
        TAG,
        response={"type": "string", "format": "binary"},
        response_type="audio/flac",
        alternate_types=("audio/wav",),
        extra_responses={206: "The part of the audio asked for with Range."},
        errors=(416,),
        description="Stereo, 8 kHz: the caller on the left channel, the callee on the right.",
    ),
    Endpoint(
        "GET",
        ITEM + "/peaks",
        peaks,
        "getRecordingPeaks",
        "Waveform summary for a player",
        TAG,
        response=PEAKS_VIEW,
    ),
    Endpoint(
        "DELETE",
        ITEM,
        delete,
        "deleteRecording",
        "Delete a recording: its data key is destroyed, so every copy of the file is unreadable",
        TAG,
        status=204,
    ),
]
