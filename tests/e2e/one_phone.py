"""One pjsua2 phone, for tests where the caller and the desk are on different hosts (network
namespaces): two_phones.py's parts, one side per process.

    python tests/e2e/one_phone.py call LOCAL_IP ROUTER_HOST ROUTER_PORT NUMBER HZ PACKETS
    python tests/e2e/one_phone.py answer LOCAL_IP PORT HZ PACKETS

The caller dials, waits until it has received PACKETS RTP packets, and hangs up. The desk
prints ``desk: ready`` once listening, answers, and waits for the hang-up; it needs half as many
packets (the caller hangs up as soon as it has its own). Each exits 0 only when its call was
confirmed, heard the other side and ended.
"""

from __future__ import annotations

import gc
import sys

import pjsua2 as pj
from two_phones import Desk, Phone, poll_until, tone


def _endpoint(local_ip: str, port: int) -> tuple[pj.Endpoint, int]:
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.logConfig.level = 2
    config.logConfig.consoleLevel = 2
    config.medConfig.noVad = True
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.boundAddress = local_ip
    transport.port = port
    transport_id = int(endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport))
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()
    return endpoint, transport_id


def _account_config(uri: str, transport_id: int, local_ip: str) -> pj.AccountConfig:
    config = pj.AccountConfig()
    config.idUri = uri
    config.sipConfig.transportId = transport_id
    # RTP from this host's own address, and said so in SDP.
    config.mediaConfig.transportConfig.boundAddress = local_ip
    return config


def call(local_ip: str, router: str, port: int, number: str, *, hz: int, packets: int) -> bool:
    endpoint, transport_id = _endpoint(local_ip, 0)
    generator = tone(hz)
    account = pj.Account()
    account.create(_account_config(f"sip:+447700900123@{local_ip}", transport_id, local_ip))
    phones = [Phone(account, generator)]
    phones[0].makeCall(f"sip:{number}@{router}:{port}", pj.CallOpParam(True))
    confirmed = poll_until(endpoint, lambda: pj.PJSIP_INV_STATE_CONFIRMED in phones[0].states)
    heard = confirmed and poll_until(endpoint, lambda: phones[0].received_packets() >= packets)
    print(f"caller: confirmed={confirmed} received={phones[0].received_packets()}", flush=True)
    if confirmed:
        phones[0].hangup(pj.CallOpParam(True))
    ended = poll_until(endpoint, lambda: pj.PJSIP_INV_STATE_DISCONNECTED in phones[0].states)
    print(f"caller: disconnected={ended}", flush=True)
    phones.clear()  # pjsua2 objects go before the library does, players before the bridge
    del generator
    gc.collect()
    endpoint.libDestroy()
    return confirmed and heard and ended


def answer(local_ip: str, port: int, hz: int, packets: int) -> bool:
    endpoint, transport_id = _endpoint(local_ip, port)
    desk = Desk(tone(hz))
    desk.create(_account_config(f"sip:desk@{local_ip}:{port}", transport_id, local_ip))
    print("desk: ready", flush=True)
    confirmed = poll_until(
        endpoint, lambda: any(pj.PJSIP_INV_STATE_CONFIRMED in c.states for c in desk.calls)
    )
    peak = [0]  # the stream statistics go with the call: keep the most seen while it lasts

    def hung_up() -> bool:
        peak[0] = max([peak[0], *(c.received_packets() for c in desk.calls)])
        return all(pj.PJSIP_INV_STATE_DISCONNECTED in c.states for c in desk.calls)

    ended = confirmed and poll_until(endpoint, hung_up)
    print(f"desk: confirmed={confirmed} disconnected={ended} received={peak[0]}", flush=True)
    heard = peak[0] >= packets // 2
    desk.calls.clear()
    desk.tone = None
    gc.collect()
    endpoint.libDestroy()
    return confirmed and ended and heard


def main(argv: list[str]) -> int:
    if argv[0] == "call":
        local_ip, router, port, number, hz, packets = argv[1:7]
        ok = call(local_ip, router, int(port), number, hz=int(hz), packets=int(packets))
    else:
        local_ip, port, hz, packets = argv[1:5]
        ok = answer(local_ip, int(port), int(hz), int(packets))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
