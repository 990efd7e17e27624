"""The probe's phones: a pjsua2 caller and, with ``--answer``, a pjsua2 answering desk.

Each plays its own tone into the call and records what it hears to a WAV file, so the report
can say which way audio flowed. Everything pjsua2 is created, used and destroyed in one thread
(:func:`place_call` blocks): pjsua2 keeps process-wide state and expects its calls from the
thread that started it. Every wait is bounded by polls of ``libHandleEvents``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pjsua2 as pj

__all__ = ["CALLER_HZ", "DESK_HZ", "CallPlan", "CallResult", "place_call", "tone"]

CALLER_HZ = 697
"""The caller's tone (a DTMF row frequency: far from the desk's and from their harmonics)."""
DESK_HZ = 1209
"""The answering desk's tone."""
_POLL_MS = 20


@dataclass(frozen=True)
class CallPlan:
    """What to dial and how long to wait.

    :param target: the SIP URI of the tracking number at the router.
    :param answer_port: where the answering desk listens (None: no desk, a real destination).
    :param ring_timeout: seconds to wait for an answer.
    :param listen: seconds of audio to record once answered.
    :param recordings: directory for the two WAV files.
    """

    target: str
    local_host: str
    answer_port: int | None
    ring_timeout: float
    listen: float
    recordings: Path


@dataclass(frozen=True)
class CallResult:
    """What the caller saw."""

    status: int
    """The final SIP status (0: none came before the ring timeout)."""
    reason: str
    post_dial_delay: float | None
    """Seconds from the INVITE to the first 18x or 200 (None: neither came)."""
    answered: bool
    sip_call_id: str
    desk_answered: bool
    """Whether the probe's own desk took the call (always False without one)."""
    gave_up: bool
    """No final response came within the ring timeout: the probe hung up."""
    caller_wav: Path | None
    """What the caller heard (None when the call was not answered)."""
    desk_wav: Path | None
    """What the desk heard."""


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account, tone: pj.ToneGenerator, call_id: int = -1) -> None:
        super().__init__(account, call_id)
        self.tone = tone
        self.recorder: pj.AudioMediaRecorder | None = None
        self.wav: Path | None = None
        self.states: list[int] = []
        self.first_progress: float | None = None
        self.status = 0
        self.reason = ""

    def onCallState(self, prm: object) -> None:
        info = self.getInfo()
        self.states.append(info.state)
        if info.lastStatusCode:
            self.status, self.reason = int(info.lastStatusCode), str(info.lastReason)
        progressing = (pj.PJSIP_INV_STATE_EARLY, pj.PJSIP_INV_STATE_CONNECTING)
        if self.first_progress is None and (
            info.state in progressing or info.state == pj.PJSIP_INV_STATE_CONFIRMED
        ):
            self.first_progress = time.monotonic()

    def onCallMediaState(self, prm: object) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(index)
                self.tone.startTransmit(audio)
                if self.recorder is None and self.wav is not None:
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(str(self.wav))
                    audio.startTransmit(self.recorder)


class _Desk(pj.Account):  # type: ignore[misc]
    """Answers every call at once."""

    def __init__(self, tone: pj.ToneGenerator, wav: Path) -> None:
        super().__init__()
        self.tone = tone
        self.wav = wav
        self.calls: list[_Call] = []

    def onIncomingCall(self, prm: Any) -> None:
        call = _Call(self, self.tone, prm.callId)
        call.wav = self.wav
        self.calls.append(call)
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)


def tone(frequency: int) -> pj.ToneGenerator:
    generator = pj.ToneGenerator()
    generator.createToneGenerator()
    tones = pj.ToneDescVector()
    desc = pj.ToneDesc()
    desc.freq1, desc.freq2, desc.on_msec, desc.off_msec = frequency, 0, 1000, 0
    tones.append(desc)
    generator.play(tones, True)
    return generator


def _transport(endpoint: pj.Endpoint, host: str, port: int) -> int:
    config = pj.TransportConfig()
    config.boundAddress = host
    config.port = port
    return int(endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, config))


def _account_config(uri: str, transport: int, host: str) -> pj.AccountConfig:
    config = pj.AccountConfig()
    config.idUri = uri
    config.sipConfig.transportId = transport
    # RTP bound where SDP says: the router's relay latches only to the address SDP names.
    config.mediaConfig.transportConfig.boundAddress = host
    return config


def _poll(endpoint: pj.Endpoint, seconds: float, done: Any) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        endpoint.libHandleEvents(_POLL_MS)
    return bool(done())


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """pjlib writes its start-up lines to file descriptor 1 before any log setting applies;
    stdout is the probe's report (``--json`` for a monitor), so they go to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def place_call(plan: CallPlan) -> CallResult:
    """Dial ``plan.target``; when answered, listen for ``plan.listen`` seconds and hang up."""
    with _stdout_to_stderr():
        return _place_call(plan)


def _place_call(plan: CallPlan) -> CallResult:
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "callrouter-probe"
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    config.medConfig.noVad = True
    endpoint.libInit(config)
    try:
        return _run(endpoint, plan)
    finally:
        gc.collect()
        endpoint.libDestroy()


def _run(endpoint: pj.Endpoint, plan: CallPlan) -> CallResult:
    host = plan.local_host
    caller_transport = _transport(endpoint, host, 0)
    desk_transport = None
    if plan.answer_port is not None:
        desk_transport = _transport(endpoint, host, plan.answer_port)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()

    tones = {"caller": tone(CALLER_HZ), "desk": tone(DESK_HZ)}
    caller_wav = plan.recordings / "heard-by-caller.wav"
    desk_wav = plan.recordings / "heard-by-desk.wav"
    account = pj.Account()
    account.create(_account_config(f"sip:probe@{host}", caller_transport, host))
    desks: list[_Desk] = []
    if desk_transport is not None:
        desks.append(_Desk(tones["desk"], desk_wav))
        desks[0].create(_account_config(f"sip:desk@{host}", desk_transport, host))

    calls = [_Call(account, tones["caller"])]
    call = calls[0]
    call.wav = caller_wav
    dialled = time.monotonic()
    call.makeCall(plan.target, pj.CallOpParam(True))
    sip_call_id = str(call.getInfo().callIdString)
    ended = pj.PJSIP_INV_STATE_DISCONNECTED
    answered = _poll(
        endpoint,
        plan.ring_timeout,
        lambda: pj.PJSIP_INV_STATE_CONFIRMED in call.states or ended in call.states,
    )
    gave_up = not answered
    last_heard = (call.status, call.reason)
    answered = answered and pj.PJSIP_INV_STATE_CONFIRMED in call.states
    if answered:
        _poll(endpoint, plan.listen, lambda: ended in call.states)
    if ended not in call.states:
        call.hangup(pj.CallOpParam(True))
        _poll(endpoint, 10.0, lambda: ended in call.states)
    desk_calls = [c for desk in desks for c in desk.calls]
    _poll(endpoint, 5.0, lambda: all(ended in c.states for c in desk_calls))
    # What the caller last heard before the probe hung up, not the 487 its CANCEL drew.
    status, reason = (200, "OK") if answered else (call.status, call.reason)
    if gave_up:
        status, reason = last_heard
    result = CallResult(
        status=status,
        reason=reason,
        post_dial_delay=None if call.first_progress is None else call.first_progress - dialled,
        answered=answered,
        sip_call_id=sip_call_id,
        desk_answered=any(pj.PJSIP_INV_STATE_CONFIRMED in c.states for c in desk_calls),
        gave_up=gave_up,
        caller_wav=caller_wav if answered and caller_wav.exists() else None,
        desk_wav=desk_wav if desk_calls and desk_wav.exists() else None,
    )
    # pjsua2 objects go before the library, recorders and players before the bridge.
    for c in [*calls, *desk_calls]:
        c.recorder = None
    calls.clear()
    for desk in desks:
        desk.calls.clear()
    desks.clear()
    tones.clear()
    return result
