"""Two pjsua2 phones in one process: the caller dials the router, the router forwards the call to
the desk phone, which answers. Both play a tone into the call; the script exits 0 only when each
side has received RTP from the other, then the caller hangs up.

    python tests/e2e/two_phones.py ROUTER_PORT DESK_PORT NUMBER [CALLER_HZ DESK_HZ PACKETS [hold]]

Each phone plays its own tone (440 Hz by default) and the call lasts until both have received
PACKETS RTP packets (25 by default: half a second). With ``hold`` the call then stays up until
standard input is closed: a test that needs a call up while other things happen ends it as
soon as it is done with it, instead of guessing a length long enough for a loaded machine.

Runs as its own process: pjsua2 keeps process-wide state and threads of its own.
"""

from __future__ import annotations

import gc
import os
import select
import sys
from collections.abc import Callable

import pjsua2 as pj

from callrouter.probe.phone import tone

MAX_POLLS = 600  # x 50 ms of event handling: the bound on every wait below
MIN_PACKETS = 25  # half a second of 20 ms frames
MAX_HOLD_POLLS = 4 * MAX_POLLS  # the bound on a held call: two minutes


class Phone(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account, tone: pj.ToneGenerator, call_id: int = -1) -> None:
        super().__init__(account, call_id)
        self.tone = tone
        self.states: list[int] = []

    def onCallState(self, prm: object) -> None:
        self.states.append(self.getInfo().state)

    def onCallMediaState(self, prm: object) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.tone.startTransmit(self.getAudioMedia(index))

    def received_packets(self) -> int:
        try:
            return int(self.getStreamStat(0).rtcp.rxStat.pkt)
        except pj.Error:
            return 0


class Desk(pj.Account):  # type: ignore[misc]
    """Answers every call at once."""

    def __init__(self, tone: pj.ToneGenerator) -> None:
        super().__init__()
        self.tone = tone
        self.calls: list[Phone] = []

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = Phone(self, self.tone, prm.callId)
        self.calls.append(call)
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)


def poll_until(endpoint: pj.Endpoint, done: Callable[[], bool], polls: int = MAX_POLLS) -> bool:
    for _ in range(polls):
        if done():
            return True
        endpoint.libHandleEvents(50)
    return False


def stdin_closed() -> bool:
    """Whether standard input is at its end (the test writes nothing: readable means EOF)."""
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(readable) and os.read(sys.stdin.fileno(), 1) == b""


def transport(endpoint: pj.Endpoint, port: int) -> int:
    config = pj.TransportConfig()
    config.boundAddress = "127.0.0.1"
    config.port = port
    return int(endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, config))


def main(argv: list[str]) -> int:
    router_port, desk_port, number = int(argv[0]), int(argv[1]), argv[2]
    extra = [int(a) for a in argv[3:6]]
    hold = argv[6:] == ["hold"]
    caller_hz, desk_hz, packets = extra if len(extra) == 3 else (440, 440, MIN_PACKETS)
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.logConfig.level = 2
    config.logConfig.consoleLevel = 2
    config.medConfig.noVad = True
    endpoint.libInit(config)
    caller_transport = transport(endpoint, 0)
    desk_transport = transport(endpoint, desk_port)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()

    caller_tone, desk_tone = tone(caller_hz), tone(desk_hz)
    caller_config = pj.AccountConfig()
    caller_config.idUri = "sip:+447700900123@127.0.0.1"
    caller_config.sipConfig.transportId = caller_transport
    # RTP on loopback, and said so in SDP: a relay latches only to the address SDP names.
    caller_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    caller_account = pj.Account()
    caller_account.create(caller_config)
    desk_config = pj.AccountConfig()
    desk_config.idUri = f"sip:desk@127.0.0.1:{desk_port}"
    desk_config.sipConfig.transportId = desk_transport
    desk_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    desk = Desk(desk_tone)
    desk.create(desk_config)

    phones = [Phone(caller_account, caller_tone)]  # a list, so it can be emptied before libDestroy
    phones[0].makeCall(f"sip:{number}@127.0.0.1:{router_port}", pj.CallOpParam(True))
    confirmed = poll_until(
        endpoint,
        lambda: (
            pj.PJSIP_INV_STATE_CONFIRMED in phones[0].states
            and any(pj.PJSIP_INV_STATE_CONFIRMED in c.states for c in desk.calls)
        ),
    )
    print(f"phones: confirmed={confirmed}", flush=True)
    halfway = confirmed and poll_until(
        endpoint,
        lambda: (
            phones[0].received_packets() >= packets // 2
            and all(c.received_packets() >= packets // 2 for c in desk.calls)
        ),
    )
    print(f"audio: halfway={halfway}", flush=True)
    heard = halfway and poll_until(
        endpoint,
        lambda: (
            phones[0].received_packets() >= packets
            and all(c.received_packets() >= packets for c in desk.calls)
        ),
    )
    if heard and hold:
        heard = poll_until(endpoint, stdin_closed, MAX_HOLD_POLLS)
    desk_packets = [c.received_packets() for c in desk.calls]
    print(f"audio: caller received {phones[0].received_packets()} RTP packets, desk {desk_packets}")
    phones[0].hangup(pj.CallOpParam(True))
    ended = poll_until(
        endpoint,
        lambda: (
            pj.PJSIP_INV_STATE_DISCONNECTED in phones[0].states
            and all(pj.PJSIP_INV_STATE_DISCONNECTED in c.states for c in desk.calls)
        ),
    )
    print(f"phones: disconnected={ended}", flush=True)
    # pjsua2 objects must go before the library does, players before the conference bridge.
    phones.clear()
    desk.calls.clear()
    desk.tone = None
    del caller_tone, desk_tone
    gc.collect()
    endpoint.libDestroy()
    return 0 if confirmed and heard and ended else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
