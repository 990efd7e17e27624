"""A pjsua2 phone for interop tests: calls the URI given, waits for the call to be confirmed,
hangs up, and exits 0 only if the call was confirmed and then disconnected cleanly.

Runs as its own process: pjsua2 keeps process-wide state and threads of its own.

    python tests/transport/phone.py sip:+441515550001@127.0.0.1:5060
"""

from __future__ import annotations

import sys

import pjsua2 as pj

MAX_POLLS = 600  # x 50 ms of event handling: the bound on every wait below


class Phone(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account) -> None:
        super().__init__(account)
        self.states: list[int] = []

    def onCallState(self, prm: object) -> None:
        info = self.getInfo()
        self.states.append(info.state)
        print(f"phone: state {info.stateText} {info.lastStatusCode}", flush=True)


def poll_until(endpoint: pj.Endpoint, done: object) -> bool:
    for _ in range(MAX_POLLS):
        if done():  # type: ignore[operator]
            return True
        endpoint.libHandleEvents(50)
    return False


def main(uri: str) -> int:
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.logConfig.level = 3
    config.logConfig.consoleLevel = 3
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.boundAddress = "127.0.0.1"
    transport.port = 0
    endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()

    account_config = pj.AccountConfig()
    account_config.idUri = "sip:+447700900123@127.0.0.1"
    account = pj.Account()
    account.create(account_config)

    call = Phone(account)
    states = call.states
    call.makeCall(uri, pj.CallOpParam(True))
    confirmed = poll_until(endpoint, lambda: pj.PJSIP_INV_STATE_CONFIRMED in states)
    if confirmed:
        print("phone: confirmed", flush=True)
        call.hangup(pj.CallOpParam(True))
    disconnected = poll_until(endpoint, lambda: pj.PJSIP_INV_STATE_DISCONNECTED in states)
    print(f"phone: disconnected={disconnected}", flush=True)
    del call  # pjsua2 objects must go before the library does
    account.shutdown()
    endpoint.libDestroy()
    return 0 if confirmed and disconnected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
