"""One probe: look the number up, (optionally) point it at our own desk, call it, judge the call.

The verdict is a :class:`ProbeReport`: the final SIP status, the post-dial delay, whether each
direction's tone was heard, and whether the router wrote the call's row and its attribution.
Any failure gives ``ok = False`` and a one-line reason, so cron or a monitor can act on the exit
status alone.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from callrouter.numbering import to_e164
from callrouter.probe.phone import CALLER_HZ, DESK_HZ, CallPlan, CallResult, place_call
from callrouter.probe.tones import rms, tone_share
from callrouter.routing.call import static_attribution
from callrouter.store import calls, numbers
from callrouter.store.database import Executor

__all__ = ["ProbeReport", "probe"]

HEARD = 0.5
"""Share of a recording's energy at the other party's tone that counts as hearing it (a clean
relay gives about 0.9; silence or our own tone gives about 0)."""
AUDIBLE = 30.0
"""RMS level (16-bit units, about -60 dBFS) above which a recording is more than silence."""
RECORD_WAIT = 15.0
"""Seconds the router has to write the ended call's row after the hang-up."""


@dataclass(frozen=True)
class ProbeReport:
    """What the probe found; ``ok`` with an empty ``reason``, or the first thing that failed."""

    number: str
    ok: bool
    reason: str
    status: int
    status_reason: str
    post_dial_delay_seconds: float | None
    audio_to_caller: bool | None
    """The destination's tone reached the caller (None: the call was not answered)."""
    audio_to_destination: bool | None
    """The caller's tone reached the destination (None: not measurable without ``--answer``)."""
    sip_call_id: str
    call_id: str | None
    call_written: bool
    disposition: str | None
    attribution_written: bool
    """The call row holds the attribution it should (a static number's own fields; any, for
    a pool number, whose attribution depends on the visit)."""
    attribution: dict[str, Any] | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The human report."""
        pdd = self.post_dial_delay_seconds
        verdict = "ok" if self.ok else f"FAILED: {self.reason}"
        return [
            f"probe {self.number}: {verdict}",
            f"  final status: {self.status} {self.status_reason}".rstrip(),
            f"  post-dial delay: {'-' if pdd is None else f'{pdd:.3f} s'}",
            f"  audio destination -> caller: {_yes_no(self.audio_to_caller)}",
            f"  audio caller -> destination: {_yes_no(self.audio_to_destination)}",
            f"  call record: {self.call_id or 'not found'} ({self.disposition or '-'})",
            f"  attribution written: {_yes_no(self.attribution_written)} {self.attribution or ''}",
            f"  Call-ID: {self.sip_call_id}",
        ]


def _yes_no(value: bool | None) -> str:
    return "not measured" if value is None else "yes" if value else "NO"


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_socket:
        probe_socket.bind((host, 0))
        return int(probe_socket.getsockname()[1])


async def probe(
    db: Executor,
    number: str,
    *,
    router: tuple[str, int],
    local_host: str = "127.0.0.1",
    answer: bool = False,
    ring_timeout: float = 30.0,
    listen: float = 2.0,
) -> ProbeReport:
    """Call ``number`` through the router at ``router`` and judge the call.

    :param db: the router's database: the number, its temporary destination, the call row.
    :param answer: answer the call ourselves: the number's destination points at a desk this
        probe runs on ``local_host`` for the length of the call, then is put back.
    :param listen: seconds of answered call to record in each direction.
    """
    e164 = to_e164(number)
    found = await numbers.find_by_e164(db, e164)
    answer_port = _free_udp_port(local_host) if answer and found is not None else None
    previous = found.destination if found is not None else None
    with tempfile.TemporaryDirectory(prefix="callrouter-probe-") as scratch:
        plan = CallPlan(
            target=f"sip:{e164}@{router[0]}:{router[1]}",
            local_host=local_host,
            answer_port=answer_port,
            ring_timeout=ring_timeout,
            listen=listen,
            recordings=Path(scratch),
        )
        if found is not None and answer_port is not None:
            desk = f"sip:desk@{local_host}:{answer_port}"
            await numbers.NUMBERS.update(db, found.id, None, {"destination": desk})
        try:
            result = await asyncio.to_thread(place_call, plan)
        finally:
            if found is not None and answer_port is not None:
                await numbers.NUMBERS.update(db, found.id, None, {"destination": previous})
        to_caller, to_destination = _audio(result, answer)
    record = None
    if found is not None:
        record = await _ended_call(db, found.id, result.sip_call_id)
    expected = None
    if found is not None and found.pool_id is None:
        expected = static_attribution(found)
    reason = _first_failure(
        e164,
        result,
        known=found is not None,
        audio=(to_caller, to_destination),
        record=record,
        expected=expected,
    )
    return ProbeReport(
        number=e164,
        ok=reason == "",
        reason=reason,
        status=result.status,
        status_reason=result.reason,
        post_dial_delay_seconds=(
            None if result.post_dial_delay is None else round(result.post_dial_delay, 4)
        ),
        audio_to_caller=to_caller,
        audio_to_destination=to_destination,
        sip_call_id=result.sip_call_id,
        call_id=str(record.id) if record else None,
        call_written=record is not None,
        disposition=record.disposition if record else None,
        attribution_written=record is not None
        and (expected is None or record.attribution == expected),
        attribution=record.attribution if record else None,
    )


def _audio(result: CallResult, answer: bool) -> tuple[bool | None, bool | None]:
    if not result.answered:
        return None, None
    to_caller = result.caller_wav is not None and (
        tone_share(result.caller_wav, DESK_HZ) >= HEARD if answer else _audible(result.caller_wav)
    )
    if not answer:
        return to_caller, None
    to_destination = result.desk_wav is not None and tone_share(result.desk_wav, CALLER_HZ) >= HEARD
    return to_caller, to_destination


def _audible(path: Path) -> bool:
    """Without our own desk the destination's audio is unknown: anything but silence counts."""
    return rms(path) >= AUDIBLE


async def _ended_call(db: Executor, number_id: Any, sip_call_id: str) -> calls.Call | None:
    """The call's row once the router has written its end (bounded by RECORD_WAIT)."""
    deadline = time.monotonic() + RECORD_WAIT
    while True:
        record = await calls.find_by_sip_call_id(db, number_id, sip_call_id)
        if (record is not None and record.state == "ended") or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.2)


def _first_failure(
    e164: str,
    result: CallResult,
    *,
    known: bool,
    audio: tuple[bool | None, bool | None],
    record: calls.Call | None,
    expected: dict[str, Any] | None,
) -> str:
    """The first thing that went wrong, or "" (``expected``: a static number's attribution)."""
    to_caller, to_destination = audio
    said = f"{result.status} {result.reason}".strip() if result.status else "no answer at all"
    if not known:
        return f"{e164} is not a tracking number here (the router answered {said})"
    if result.gave_up:
        heard = f" (last heard: {said})" if result.status else " (not even ringing)"
        return f"the call was not answered within the ring timeout{heard}"
    if not result.answered:
        return f"the call was not answered: {said}"
    if not to_caller:
        return "no audio reached the caller"
    if to_destination is False:
        return "no audio reached the destination"
    if record is None:
        return "the router wrote no call record"
    if record.state != "ended":
        return f"the call record is still {record.state!r} after the hang-up"
    if expected is not None and record.attribution != expected:
        return f"the call's attribution {record.attribution} is not the number's {expected}"
    return ""
