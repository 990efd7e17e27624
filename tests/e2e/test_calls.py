"""Calls through ``callrouter serve``: SIPp as the carrier, SIPp as the client's PBX.

Each test gives its own tracking number a destination (and a secondary) on SIPp PBXs, places
one call, and checks the call record against what the PBXs saw. The router announces each
call once its record is durable, and the tests wait for that line.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from callrouter.media.g711 import alaw_encode, ulaw_encode
from callrouter.media.rtp import RtpPacket, parse_rtp
from tests.conftest import world_traversable_tempdir
from tests.e2e.router_api import Router as RouterApi
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, Pbx, free_port, request_scenario, run_sipp

NUMBERS = count(1)


def closed_hours() -> str:
    """An hours window that excludes now (UTC) for the next couple of hours."""
    start = datetime.now(UTC) + timedelta(hours=3)
    end = start + timedelta(hours=1)
    return f"{start:%H}:00-{end:%H}:00"


DIALPLANS = {
    "failover.toml": """
[[step]]
dial = ["{destination}"]
ring_timeout = 2

[[step]]
dial = ["{secondary_destination}"]
ring_timeout = 10
""",
    "announced.toml": """
[[step]]
announce = "recording-notice"

[[step]]
dial = ["{destination}"]
""",
    "greeted.toml": """
[[step]]
announce = "may-be-recorded"

[[step]]
dial = ["{destination}"]
""",
    "doomed.toml": """
[[step]]
announce = "doomed"

[[step]]
dial = ["{destination}"]
""",
    "short.toml": """
[[step]]
max_duration = 1

[[step]]
dial = ["{destination}"]
""",
    "hours.toml": f"""
timezone = "UTC"

[[step]]
when = {{ hours = "{closed_hours()}" }}
dial = ["{{destination}}"]

[[step]]
reject = 480
reason = "Closed"
""",
}


# The operator's prompt: noise, so the test can tell every sample heard is the file's own.
PROMPT = np.random.default_rng(11).integers(-8000, 8000, 8000 * 13 // 10, dtype=np.int16)
PROMPTS = {"may-be-recorded.wav": PROMPT, "doomed.wav": PROMPT[:800]}

# Destinations with two RFC 3263 targets each (static routes stand in for SRV records): the
# first answers 503 or is silent, the second answers.
TARGETS = {name: (free_port(), free_port()) for name in ("overloaded.test", "silent.test")}


class Router(RouterApi):
    """A running ``callrouter serve`` with an API client for one client's numbers."""

    def __init__(self, server: ServeProcess, dialplans: Path) -> None:
        super().__init__(server)
        self.dialplans = dialplans

    def number(self, dialplan: str = "default", **params: str) -> str:
        e164 = f"+4415155{next(NUMBERS):05d}"
        destination = params.pop("destination", None)
        self.api(
            "POST",
            "/v1/numbers",
            {
                "client_id": self.client_id,
                "e164": e164,
                "destination": destination,
                "dialplan": dialplan,
                "dialplan_params": params,
            },
        )
        return e164

    def number_id(self, e164: str) -> str:
        (number,) = self.api("GET", "/v1/numbers?e164=" + e164.replace("+", "%2B"))["data"]
        return str(number["id"])

    def call_record(self, e164: str) -> dict[str, Any]:
        self.server.wait_event("call.ended", tracking_number=e164)
        page = self.api("GET", "/v1/calls?number=" + e164.replace("+", "%2B"))
        (call,) = page["data"]
        return dict(self.api("GET", f"/v1/calls/{call['id']}"))


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    workdir = world_traversable_tempdir("callrouter-calls-")
    dialplans = workdir / "dialplans"
    dialplans.mkdir()
    for name, text in DIALPLANS.items():
        (dialplans / name).write_text(text)
    (dialplans / "prompts").mkdir()
    for name, audio in PROMPTS.items():
        soundfile.write(dialplans / "prompts" / name, audio, 8000, subtype="PCM_16")
    routes = ", ".join(
        f"{host}=udp:127.0.0.1:{port}" for host, ports in TARGETS.items() for port in ports
    )
    server = ServeProcess(
        workdir / "data",
        "--dialplans-dir",
        str(dialplans),
        "--sip-static-routes",
        routes,
        "--sip-target-timeout",
        "1",
    )
    try:
        server.wait_ready()
        yield Router(server, dialplans)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


PbxFactory = Callable[..., Pbx]


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[PbxFactory]:
    """Starts PBXs for a test; any still running at its end is killed."""
    started: list[Pbx] = []

    def start(scenario: str | Path, calls: int = 1, port: int | None = None) -> Pbx:
        started.append(Pbx(scenario, tmp_path, calls, port))
        return started[-1]

    yield start
    for one in started:
        if one.process.poll() is None:
            one.process.kill()
        one.process.communicate()


def passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def pbx_passed(pbx: Pbx) -> None:
    code, output = pbx.finished()
    assert code == 0, output


def attempts(call: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(a["destination"], a["result"], a["sip_status"]) for a in call["attempts"]]


def test_answered_call_hung_up_by_the_caller(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    pbx = pbx("pbx_answer.xml")
    e164 = router.number(destination=pbx.uri)
    passed(run_sipp("uac", router.port, tmp_path, service=e164))
    pbx_passed(pbx)
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "caller")
    assert attempts(call) == [(pbx.uri, "answered", 200)]
    assert call["answered_at"] is not None and call["ended_at"] is not None


def test_answered_call_hung_up_by_the_destination(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    pbx = pbx("pbx_hangs_up.xml")
    e164 = router.number(destination=pbx.uri)
    passed(run_sipp(SCENARIOS / "carrier_callee_hangs_up.xml", router.port, tmp_path, service=e164))
    pbx_passed(pbx)
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "callee")


def test_busy_fails_over_to_the_secondary(router: Router, pbx: PbxFactory, tmp_path: Path) -> None:
    busy, backup = pbx("pbx_busy.xml"), pbx("pbx_answer.xml")
    e164 = router.number(destination=busy.uri, secondary_destination=backup.uri)
    passed(run_sipp("uac", router.port, tmp_path, service=e164))
    pbx_passed(busy)
    pbx_passed(backup)
    call = router.call_record(e164)
    assert call["disposition"] == "answered"
    assert attempts(call) == [(busy.uri, "busy", 486), (backup.uri, "answered", 200)]


def test_no_answer_fails_over_after_the_ring_timeout(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    ringing, backup = pbx("pbx_ring.xml"), pbx("pbx_answer.xml")
    e164 = router.number("failover", destination=ringing.uri, secondary_destination=backup.uri)
    passed(run_sipp("uac", router.port, tmp_path, service=e164))
    pbx_passed(ringing)
    pbx_passed(backup)
    call = router.call_record(e164)
    assert call["disposition"] == "answered"
    assert attempts(call) == [(ringing.uri, "no_answer", None), (backup.uri, "answered", 200)]


def test_caller_cancel_gets_487_and_cancels_the_branch(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    ringing = pbx("pbx_ring.xml")
    e164 = router.number(destination=ringing.uri)
    passed(run_sipp(SCENARIOS / "carrier_cancels.xml", router.port, tmp_path, service=e164))
    pbx_passed(ringing)
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"]) == ("cancelled", "caller")
    assert attempts(call) == [(ringing.uri, "cancelled", None)]


def test_a_503_sends_the_invite_to_the_next_rfc3263_target(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    first, second = TARGETS["overloaded.test"]
    overloaded, healthy = pbx("pbx_unavailable.xml", port=first), pbx("pbx_answer.xml", port=second)
    e164 = router.number(destination="sip:desk@overloaded.test")
    passed(run_sipp("uac", router.port, tmp_path, service=e164))
    pbx_passed(overloaded)
    pbx_passed(healthy)
    call = router.call_record(e164)
    assert call["disposition"] == "answered"
    assert attempts(call) == [("sip:desk@overloaded.test", "answered", 200)]


def test_a_silent_target_is_skipped_for_the_next(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    _nobody, second = TARGETS["silent.test"]
    healthy = pbx("pbx_answer.xml", port=second)
    e164 = router.number(destination="sip:desk@silent.test")
    passed(run_sipp("uac", router.port, tmp_path, service=e164))
    pbx_passed(healthy)
    call = router.call_record(e164)
    assert call["disposition"] == "answered"
    assert attempts(call) == [("sip:desk@silent.test", "answered", 200)]


def test_a_trunk_reads_to_and_rewrites_the_caller_id(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    """An SBC on 127.0.0.2 puts its pilot number in the Request-URI and the caller in national
    format; E.164 destinations leave through its gateway with the trunk's own caller ID."""
    gateway = pbx("pbx_answer_rewritten_caller.xml")
    trunk = router.api(
        "POST",
        "/v1/trunks",
        {
            "name": "sbc",
            "networks": ["127.0.0.2/32"],
            "number_from": "to",
            "country": "GB",
            "uri": f"sip:127.0.0.1:{gateway.port}",
            "caller_id": "rewrite",
            "caller_id_number": "+441519999999",
        },
    )
    try:
        router.server.wait_for(r"sip: trunks in service: sbc, config")
        e164 = router.number(destination="+441515550999")
        passed(
            run_sipp(
                SCENARIOS / "carrier_sbc.xml",
                router.port,
                tmp_path,
                service=e164,
                local_ip="127.0.0.2",
            )
        )
        pbx_passed(gateway)
        call = router.call_record(e164)
    finally:
        router.api("DELETE", f"/v1/trunks/{trunk['id']}")
    assert (call["disposition"], call["trunk"]) == ("answered", "sbc")
    assert call["caller_number"] == "+447700900123"
    assert attempts(call) == [("+441515550999", "answered", 200)]


def test_a_recorded_call_hears_the_recording_notice_before_it_is_connected(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    """The notice plays as early media: 183 with the router's SDP, then the destination rings,
    answers, and the call is recorded."""
    desk = pbx("pbx_answer.xml")
    e164 = router.number("announced", destination=desk.uri)
    router.api("PATCH", f"/v1/numbers/{router.number_id(e164)}", {"record": True})
    passed(
        run_sipp(SCENARIOS / "carrier_hears_announcement.xml", router.port, tmp_path, service=e164)
    )
    pbx_passed(desk)
    call = router.call_record(e164)
    assert (call["disposition"], call["record"], call["not_recorded_reason"]) == (
        "answered",
        True,
        None,
    )
    router.server.wait_event("recording.ready", call_id=call["id"])


# SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it): the kernel
# stamps each datagram's arrival, so a busy test process cannot make a packet look late.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("qq")


class RtpSink:
    """The caller's RTP socket: keeps each datagram with the wall-clock time it arrived."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])
        self.received: list[tuple[float, RtpPacket]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _address = self.socket.recvmsg(
                    2048, socket.CMSG_SPACE(TIMESPEC.size)
                )
            except TimeoutError:
                continue  # a bounded wait, to see the stop flag
            [(level, kind, stamp)] = ancillary
            assert (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)
            seconds, nanoseconds = TIMESPEC.unpack(stamp)
            self.received.append((seconds + nanoseconds / 1e9, parse_rtp(data)))

    def close(self) -> list[tuple[float, RtpPacket]]:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()
        return self.received


@pytest.fixture
def sink() -> Iterator[RtpSink]:
    made = RtpSink()
    yield made
    made.close()


def hears_prompt(router: Router, e164: str, tmp_path: Path, sink: RtpSink, codec: str) -> None:
    keys = ("-key", "rtp_port", str(sink.port), "-key", "codec", codec)
    keys += ("-key", "pt", {"PCMU": "0", "PCMA": "8"}[codec])
    passed(
        run_sipp(
            SCENARIOS / "carrier_hears_prompt.xml", router.port, tmp_path, service=e164, extra=keys
        )
    )


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_the_caller_hears_the_operators_prompt_before_the_destination_answers(
    router: Router, pbx: PbxFactory, tmp_path: Path, sink: RtpSink, codec: str
) -> None:
    """``announce = "may-be-recorded"`` plays prompts/may-be-recorded.wav as early media in the
    caller's codec, every sample of it, before the destination is rung."""
    desk = pbx("pbx_answer.xml")
    e164 = router.number("greeted", destination=desk.uri)
    router.api("PATCH", f"/v1/numbers/{router.number_id(e164)}", {"record": True})
    hears_prompt(router, e164, tmp_path, sink, codec)
    pbx_passed(desk)
    call = router.call_record(e164)
    assert (call["disposition"], call["record"]) == ("answered", True)
    received = sink.close()
    assert len(received) == 65  # 1.3 s in 20 ms packets; the PBX of SIPp sends no audio
    packets = [packet for _at, packet in received]
    payload_type, encode = {"PCMU": (0, ulaw_encode), "PCMA": (8, alaw_encode)}[codec]
    assert {p.payload_type for p in packets} == {payload_type}
    first = next(p.sequence for p in packets if p.marker)  # the talkspurt's start
    packets.sort(key=lambda p: (p.sequence - first) % 65536)  # UDP may reorder
    assert b"".join(p.payload for p in packets) == encode(PROMPT)
    last_heard = max(at for at, _packet in received)
    assert last_heard < datetime.fromisoformat(call["answered_at"]).timestamp()
    router.server.wait_event("recording.ready", call_id=call["id"])


def test_a_prompt_removed_after_load_lets_the_call_through_without_it(
    router: Router, pbx: PbxFactory, tmp_path: Path, sink: RtpSink
) -> None:
    """The worker cannot read the file any more: the call goes on to the next step, unheard,
    logged and counted; the plan loaded before keeps serving."""
    (router.dialplans / "prompts" / "doomed.wav").unlink()
    router.server.wait_for(r"dialplan: refused \S+doomed\.toml:3: step 1: prompt 'doomed'")
    desk = pbx("pbx_answer.xml")
    e164 = router.number("doomed", destination=desk.uri)
    router.api("PATCH", f"/v1/numbers/{router.number_id(e164)}", {"record": True})
    hears_prompt(router, e164, tmp_path, sink, "PCMU")
    pbx_passed(desk)
    call = router.call_record(e164)
    assert (call["disposition"], call["record"]) == ("answered", True)
    assert attempts(call) == [(desk.uri, "answered", 200)]
    assert sink.close() == []
    router.server.wait_for(rf"call {call['id']}: announcement doomed not played: .*doomed\.wav")
    with urllib.request.urlopen(router.server.http_url + "/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert re.search(r'^callrouter_announcements_total\{outcome="failed"\} [1-9]', metrics, re.M)


def test_closed_hours_take_the_closed_step(router: Router, tmp_path: Path) -> None:
    e164 = router.number("hours", destination="sip:desk@127.0.0.1:9")
    passed(run_sipp(request_scenario("INVITE", 480), router.port, tmp_path, service=e164))
    call = router.call_record(e164)
    assert call["disposition"] == "rejected" and call["attempts"] == []
    assert call["hangup_reason"] == "Closed"


def test_a_broken_dialplan_edit_is_refused_and_calls_keep_routing(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    path = router.dialplans / "failover.toml"
    good = path.read_text()
    path.write_text(good.replace("ring_timeout = 2\n", "ring_timeout = two\n"))
    refused = router.server.wait_for(r"dialplan: refused (\S+failover\.toml:\d+): (.*)")
    assert refused.group(1) == f"{path}:4"
    assert "(the previous version keeps serving)" in refused.group(2)
    ringing, backup = pbx("pbx_ring.xml"), pbx("pbx_answer.xml")
    e164 = router.number("failover", destination=ringing.uri, secondary_destination=backup.uri)
    passed(run_sipp("uac", router.port, tmp_path, service=e164))
    pbx_passed(ringing)
    pbx_passed(backup)
    call = router.call_record(e164)
    assert attempts(call) == [(ringing.uri, "no_answer", None), (backup.uri, "answered", 200)]
    path.write_text(good)
    router.server.wait_for(r"dialplan: reloaded failover")


def test_dialplan_explain_beside_the_running_server(router: Router) -> None:
    e164 = router.number("hours", destination="sip:desk@127.0.0.1:9")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "callrouter",
            "dialplan",
            "explain",
            e164,
            "--at",
            "2026-11-25T12:00:00+00:00",
            "--data-dir",
            str(router.server.data_dir),
            "--dialplans-dir",
            str(router.dialplans),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{e164}: client {router.client_id}, dialplan hours"
    assert lines[-1] == "  run     step 2 (line 8): reject 480 Closed"


class LossyRelay:
    """tests/e2e/lossy_relay.py in front of a port: drops a seeded share of datagrams."""

    def __init__(self, target_port: int, seed: int, towards: float, back: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("lossy_relay.py")),
                str(towards),
                str(back),
                str(seed),
                str(target_port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("relay: listening on "), line
        self.port = int(line.split()[-1])

    def close(self) -> str:
        summary, _ = self.process.communicate(timeout=30)
        return summary.strip()


@pytest.fixture
def relays() -> Iterator[Callable[[int, int, float, float], LossyRelay]]:
    started: list[LossyRelay] = []

    def start(target_port: int, seed: int, towards: float, back: float) -> LossyRelay:
        started.append(LossyRelay(target_port, seed, towards, back))
        return started[-1]

    yield start
    for relay in started:
        if relay.process.poll() is None:
            relay.close()


def test_calls_complete_through_10_percent_packet_loss_on_both_sides(
    router: Router,
    pbx: PbxFactory,
    relays: Callable[[int, int, float, float], LossyRelay],
    tmp_path: Path,
) -> None:
    """Both legs pass through relays that drop 10 % of datagrams (seeded, so a run is
    reproducible). On the carrier's leg both directions lose packets. On the PBX's leg only what
    the router sends is lost (INVITE, ACK, BYE): SIPp playing the PBX cannot cope with its own
    answers being lost (it aborts the call on the INVITE retransmission that follows), which a
    real PBX handles, so that direction would test SIPp rather than the router."""
    calls = 10
    desk_port = free_port()
    to_desk = relays(desk_port, 1, 10.0, 0.0)
    # The PBX gives the relay as its Contact, so the router's ACK and BYE cross it too.
    scenario = tmp_path / "pbx_behind_relay.xml"
    scenario.write_text(
        (SCENARIOS / "pbx_answer.xml")
        .read_text()
        .replace(
            "Contact: <sip:[local_ip]:[local_port];", f"Contact: <sip:[local_ip]:{to_desk.port};"
        )
    )
    desk = pbx(scenario, calls=calls, port=desk_port)
    to_router = relays(router.port, 2, 10.0, 10.0)
    e164 = router.number(destination=f"sip:desk@127.0.0.1:{to_desk.port}")
    passed(run_sipp("uac", to_router.port, tmp_path, service=e164, calls=calls, extra=("-l", "2")))
    pbx_passed(desk)
    losses = [to_router.close(), to_desk.close()]
    assert all(" dropped 0" not in summary for summary in losses), losses
    ended = router.server.wait_events(
        "call.ended", calls, tracking_number=e164, disposition="answered"
    )
    ids = [record["call_id"] for record in ended]
    assert len(set(ids)) == calls
    page = router.api("GET", f"/v1/calls?limit=50&number={e164.replace('+', '%2B')}")
    assert len(page["data"]) == calls
    for call in page["data"]:
        record = router.api("GET", f"/v1/calls/{call['id']}")
        assert (record["disposition"], record["hangup_by"]) == ("answered", "caller")
        assert [a["result"] for a in record["attempts"]] == ["answered"]


def test_two_pjsua2_phones_talk_through_the_router(router: Router, tmp_path: Path) -> None:
    desk_port = free_port()
    e164 = router.number(destination=f"sip:desk@127.0.0.1:{desk_port}")
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("two_phones.py")),
            str(router.port),
            str(desk_port),
            e164,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "phones: confirmed=True" in result.stdout
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "caller")


def test_hold_is_relayed_across_both_legs(router: Router, pbx: PbxFactory, tmp_path: Path) -> None:
    """The caller's re-INVITE (a=sendonly) reaches the PBX, whose recvonly answer comes back."""
    desk = pbx("pbx_hold.xml")
    e164 = router.number(destination=desk.uri)
    passed(run_sipp(SCENARIOS / "carrier_holds.xml", router.port, tmp_path, service=e164))
    pbx_passed(desk)
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "caller")


def test_hold_on_a_recorded_call_goes_through_the_media_worker(
    router: Router, pbx: PbxFactory, tmp_path: Path
) -> None:
    """Anchored SDP still carries the hold: sendonly reaches the PBX, recvonly comes back, and
    both point at the media worker, which follows the new offer and answer."""
    desk = pbx("pbx_hold.xml")
    e164 = router.number(destination=desk.uri)
    router.api("PATCH", f"/v1/numbers/{router.number_id(e164)}", {"record": True})
    passed(run_sipp(SCENARIOS / "carrier_holds.xml", router.port, tmp_path, service=e164))
    pbx_passed(desk)
    call = router.call_record(e164)
    assert (call["disposition"], call["record"], call["not_recorded_reason"]) == (
        "answered",
        True,
        None,
    )
    router.server.wait_event("recording.ready", call_id=call["id"])


def test_max_duration_ends_both_legs(router: Router, pbx: PbxFactory, tmp_path: Path) -> None:
    desk = pbx("pbx_answer.xml")
    e164 = router.number("short", destination=desk.uri)
    passed(run_sipp(SCENARIOS / "carrier_callee_hangs_up.xml", router.port, tmp_path, service=e164))
    pbx_passed(desk)
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"], call["hangup_reason"]) == (
        "answered",
        "system",
        "max duration",
    )
