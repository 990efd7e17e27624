"""Separate hosts behind NAT, for real: a carrier, the router and a client's PBX in their own
network namespaces, joined through a NAT namespace that owns the router's public address.

    carrier 198.51.100.10/25 ─┐
                              ├─ NAT (nftables: 203.0.113.5 <-> 198.51.100.130, 1:1) ─ router
    PBX     192.0.2.10/24  ───┘                                                 198.51.100.130/25

The router runs ``callrouter serve`` bound to 0.0.0.0 with ``--sip-advertise`` and
``--media-advertise`` set to the public 203.0.113.5 and only ever sees its private address. The
NAT forwards nothing to that private address that it did not translate, so a call completes only
when every address the router writes is the public one. dumpcap on the NAT's outer interfaces
records what the carrier and the PBX receive, and the test reads it back: no SIP header and no
SDP names 0.0.0.0, loopback or the private address.

Started as root, serve switches to the ``callrouter`` user once its ports are open; the last
test checks that no process of it (main, media worker, PostgreSQL) is left as root.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from callrouter.privileges import Account, account_for, unreachable_install
from tests.conftest import world_traversable_tempdir
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, SIPP_TIMEOUT, free_port, sipp_command
from tests.e2e.test_recording import CALLEE_HZ, CALLER_HZ, dominant_hz

PUBLIC = "203.0.113.5"
PRIVATE = "198.51.100.130"
CARRIER = "198.51.100.10"
NATTED_CARRIER = "198.51.100.11"
"""A second carrier, itself behind NAT: its Via and Contact name an address nobody has."""
NOWHERE = "198.51.100.99"
PBX = "192.0.2.10"
PRIVILEGED_HTTP_PORT = 80
PHONE = Path(__file__).with_name("one_phone.py")
PACKETS = 150  # the caller hears 3 s of the desk before it hangs up
FORBIDDEN = re.compile(rf"0\.0\.0\.0|\b127\.\d+\.\d+\.\d+|{re.escape(PRIVATE)}")

NFT_RULES = """
table ip callrouter_nat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr %(public)s dnat to %(private)s
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr %(private)s snat to %(public)s
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct status dnat accept
        iifname "%(inside)s" accept
    }
}
"""


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"
    return result.stdout


class Network:
    """Four namespaces with random names and veth pairs to the NAT; removed by ``close``."""

    def __init__(self) -> None:
        suffix = secrets.token_hex(3)
        self.names = {role: f"cr-{role}-{suffix}" for role in ("car", "nat", "rtr", "pbx")}
        # (inside end, NAT end, inside address, NAT address, prefix length)
        self.links = {
            "car": (f"vc{suffix}", f"vcn{suffix}", CARRIER, "198.51.100.1", 25),
            "rtr": (f"vr{suffix}", f"vrn{suffix}", PRIVATE, "198.51.100.129", 25),
            "pbx": (f"vp{suffix}", f"vpn{suffix}", PBX, "192.0.2.1", 24),
        }
        self.made: list[str] = []

    def exec(self, role: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.names[role])

    def build(self) -> None:
        for name in self.names.values():
            run("ip", "netns", "add", name)
            self.made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        nat = self.names["nat"]
        for role, (inside, outside, address, gateway, length) in self.links.items():
            name = self.names[role]
            run("ip", "link", "add", inside, "netns", name, "type", "veth", "peer", "name",
                outside, "netns", nat)  # fmt: skip
            run("ip", "-n", name, "addr", "add", f"{address}/{length}", "dev", inside)
            run("ip", "-n", nat, "addr", "add", f"{gateway}/{length}", "dev", outside)
            run("ip", "-n", name, "link", "set", inside, "up")
            run("ip", "-n", nat, "link", "set", outside, "up")
            run("ip", "-n", name, "route", "add", "default", "via", gateway)
        run("ip", "-n", self.names["car"], "addr", "add", f"{NATTED_CARRIER}/25", "dev",
            self.links["car"][0])  # fmt: skip
        run(*self.exec("nat"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = NFT_RULES % {"public": PUBLIC, "private": PRIVATE, "inside": self.links["rtr"][1]}
        subprocess.run(
            [*self.exec("nat"), "nft", "-f", "-"], input=rules, text=True, check=True, timeout=30
        )

    def close(self) -> None:
        for name in self.made:  # the veth pairs go with their namespaces
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def readable_python(account: Account, workdir: Path) -> tuple[str, ...]:
    """A prefix that runs serve where ``account`` can read this Python, when it cannot here (a
    pyenv under /root, mode 0700): a private mount namespace with the blocking directory
    replaced by a traversable tmpfs holding only what Python needs, as a proper install under
    /usr or /opt would be. Empty when nothing blocks."""
    blocked = unreachable_install(account)
    if blocked is None:
        return ()
    paths = sysconfig.get_paths()
    needed = [Path(sys.executable).resolve(), *(Path(paths[k]) for k in ("stdlib", "purelib"))]
    children = sorted(
        {p.relative_to(blocked).parts[0] for p in needed if p.is_relative_to(blocked)}
    )
    keep = workdir / "keep"
    keep.mkdir()
    script = [
        "set -e",
        f"mount --bind '{blocked}' '{keep}'",
        f"mount -t tmpfs -o mode=0755 tmpfs '{blocked}'",
        *(f"mkdir '{blocked}/{c}' && mount --bind '{keep}/{c}' '{blocked}/{c}'" for c in children),
        'exec "$@"',
    ]
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh")


class Router:
    """serve in the router namespace, and its API (reached from inside that namespace)."""

    def __init__(self, network: Network, server: ServeProcess) -> None:
        self.network = network
        self.server = server
        self.client_id = self.api("POST", "/v1/clients", {"name": "Acme"})["id"]

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        command = [
            *self.network.exec("rtr"), "curl", "--silent", "--max-time", "30", "-X", method,
            "-H", f"Authorization: Bearer {self.server.operator_key}",
            "-H", "Content-Type: application/json",
            "-w", "\n%{http_code}", self.server.http_url + path,
        ]  # fmt: skip
        if body is not None:
            command += ["--data", json.dumps(body)]
        result = subprocess.run(command, capture_output=True, timeout=60, check=True)
        data, _, status = result.stdout.rpartition(b"\n")
        return int(status), data

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = self.request(method, path, body)
        assert 200 <= status < 300, (status, data[:500])
        return json.loads(data or b"null")

    def number(self, destination: str, *, record: bool = False) -> str:
        e164 = f"+44151555{secrets.randbelow(10**4):04d}"
        self.api(
            "POST",
            "/v1/numbers",
            {
                "client_id": self.client_id,
                "e164": e164,
                "destination": destination,
                "record": record,
            },
        )
        return e164

    def call_record(self, e164: str) -> dict[str, Any]:
        self.server.wait_for(rf"call: \S+ to \{e164} ended")
        (call,) = self.api("GET", "/v1/calls?number=" + e164.replace("+", "%2B"))["data"]
        return dict(self.api("GET", f"/v1/calls/{call['id']}"))


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root and runs this)")
    probe = f"cr-probe-{secrets.token_hex(3)}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        pytest.skip(f"network namespaces cannot be created here: {made.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    network = Network()
    try:
        network.build()
        yield network
    finally:
        network.close()


@pytest.fixture(scope="module")
def router(network: Network) -> Iterator[Router]:
    workdir = world_traversable_tempdir("callrouter-nat-")
    account = account_for("callrouter")
    assert account is not None
    server = ServeProcess(
        workdir / "data",
        "--sip-host", "0.0.0.0",
        "--sip-advertise", PUBLIC,
        "--media-host", "0.0.0.0",
        "--media-advertise", PUBLIC,
        "--sip-carriers", f"{CARRIER}/32",
        "--recordings-dir", str(workdir / "recordings"),
        # Below 1024, so only root can open it: serve must bind before it drops. The router's
        # namespace is new and empty, so a fixed port cannot collide with anything.
        "--http-port", str(PRIVILEGED_HTTP_PORT),
        prefix=(*network.exec("rtr"), *readable_python(account, workdir)),
    )  # fmt: skip
    try:
        server.wait_ready()
        yield Router(network, server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class Capture:
    """dumpcap on the NAT's outer interfaces: what the carrier and the PBX receive."""

    def __init__(self, network: Network, path: Path) -> None:
        self.path = path
        outer = [network.links[role][1] for role in ("car", "pbx")]
        self.process = subprocess.Popen(
            [*network.exec("nat"), "dumpcap", "-q", "-i", outer[0], "-i", outer[1],
             "-f", "udp or tcp", "-w", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        # dumpcap writes the file's header once both interfaces are open.
        deadline = time.monotonic() + 20
        while not (path.exists() and path.stat().st_size > 0):
            assert self.process.poll() is None, self.process.communicate()[1]
            assert time.monotonic() < deadline, "dumpcap did not start"
            time.sleep(0.05)

    def stop(self) -> list[tuple[str, str, str]]:
        """(source, destination, text) of every SIP message captured."""
        self.process.send_signal(signal.SIGINT)
        self.process.communicate(timeout=30)
        fields = run(
            "tshark", "-r", str(self.path), "-Y", "sip", "-T", "fields",
            "-e", "ip.src", "-e", "ip.dst", "-e", "udp.payload", "-e", "tcp.payload",
        )  # fmt: skip
        messages = []
        for line in fields.splitlines():
            source, destination, datagram, segment = line.split("\t")
            payload = (datagram or segment).replace(":", "")
            text = bytes.fromhex(payload).decode("utf-8", "replace")
            messages.append((source, destination, text))
        return messages


@pytest.fixture
def capture(network: Network, tmp_path: Path) -> Iterator[Capture]:
    capture = Capture(network, tmp_path / "nat.pcapng")
    try:
        yield capture
    finally:
        if capture.process.poll() is None:
            capture.process.kill()
            capture.process.communicate()


def from_router(messages: list[tuple[str, str, str]]) -> list[str]:
    """What left the router, checked to carry only its public address."""
    assert all(source != PRIVATE for source, _, _ in messages), "the NAT leaked the private address"
    sent = [text for source, _, text in messages if source == PUBLIC]
    for text in sent:
        assert not FORBIDDEN.search(text), text
    return sent


def first(messages: list[str], start: str) -> str:
    found = [m for m in messages if m.startswith(start)]
    assert found, f"no {start!r} among {[m.split(chr(13))[0] for m in messages]}"
    return found[0]


class Pbx:
    """SIPp as the client's PBX, listening on the PBX host."""

    def __init__(self, network: Network, scenario: str, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path / f"pbx-{self.port}"
        self.dir.mkdir()
        command = sipp_command(SCENARIOS / scenario, 0, self.dir, local_ip=PBX)
        command[1] = "-bind_local"  # a server: no remote host, listen on -p
        command = [c for c in command if c != "-timeout_error"]
        command[command.index("-p") + 1] = str(self.port)
        self.process = subprocess.Popen(
            [*network.exec("pbx"), *command],
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def uri(self) -> str:
        return f"sip:desk@{PBX}:{self.port}"

    def passed(self) -> None:
        output, _ = self.process.communicate(timeout=SIPP_TIMEOUT)
        errors = self.dir / "sipp-errors.log"
        assert self.process.returncode == 0, output[-2000:] + (
            errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
        )


def carrier_call(
    network: Network,
    router: Router,
    scenario: str | Path,
    e164: str,
    tmp_path: Path,
    *,
    local_ip: str = CARRIER,
    transport: str = "udp",
) -> None:
    """SIPp as the carrier, calling the router's public address with ``scenario`` (a file,
    XML text, or ``uac``)."""
    tmp_path.mkdir()
    command = sipp_command(
        scenario,
        router.server.sip_port(),
        tmp_path,
        service=e164,
        local_ip=local_ip,
        remote_host=PUBLIC,
        transport=transport,
    )
    result = subprocess.run(
        [*network.exec("car"), *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SIPP_TIMEOUT,
        check=False,
    )
    errors = tmp_path / "sipp-errors.log"
    assert result.returncode == 0, result.stdout[-2000:] + (
        errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
    )


def test_sipp_calls_cross_the_nat_with_bye_from_either_side(
    network: Network, router: Router, capture: Capture, tmp_path: Path
) -> None:
    answering = Pbx(network, "pbx_answer.xml", tmp_path)
    by_caller = router.number(answering.uri)
    carrier_call(network, router, "uac", by_caller, tmp_path / "caller-bye")
    answering.passed()
    hanging_up = Pbx(network, "pbx_hangs_up.xml", tmp_path)
    by_callee = router.number(hanging_up.uri)
    carrier_call(
        network,
        router,
        SCENARIOS / "carrier_callee_hangs_up.xml",
        by_callee,
        tmp_path / "callee-bye",
    )
    hanging_up.passed()
    over_tcp = Pbx(network, "pbx_answer.xml", tmp_path)
    by_tcp = router.number(over_tcp.uri)
    carrier_call(network, router, "uac", by_tcp, tmp_path / "tcp", transport="tcp")
    over_tcp.passed()
    first_call, second_call = router.call_record(by_caller), router.call_record(by_callee)
    assert (first_call["disposition"], first_call["hangup_by"]) == ("answered", "caller")
    assert (second_call["disposition"], second_call["hangup_by"]) == ("answered", "callee")
    assert router.call_record(by_tcp)["disposition"] == "answered"

    sent = from_router(capture.stop())
    invite = first(sent, "INVITE ")
    assert f"SIP/2.0/UDP {PUBLIC}:" in invite and f"<sip:callrouter@{PUBLIC}:" in invite
    assert re.search(rf"^From: .*@{re.escape(PUBLIC)}>;tag=", invite, re.M), invite
    assert re.search(rf"^Call-ID: \S+@{re.escape(PUBLIC)}\r?$", invite, re.M), invite
    ok = first(sent, "SIP/2.0 200 OK")
    assert f"<sip:callrouter@{PUBLIC}:" in ok
    assert any(m.startswith("BYE ") for m in sent)  # to the carrier: the callee hung up
    tcp_contact = f"<sip:callrouter@{PUBLIC}:{router.server.sip_port('tcp')};transport=tcp>"
    assert any(m.startswith("SIP/2.0 200 OK") and tcp_contact in m for m in sent), sent


def test_a_carrier_behind_nat_is_answered_where_its_requests_come_from(
    network: Network, router: Router, tmp_path: Path
) -> None:
    """Its Via (with ``rport``) and Contact name NOWHERE: responses must follow ``received`` and
    ``rport`` (RFC 3581) and, its trunk having ``nat``, the BYE the callee causes must go to
    the source address rather than the Contact."""
    router.api(
        "POST",
        "/v1/trunks",
        {"name": "natted", "networks": [f"{NATTED_CARRIER}/32"], "nat": True},
    )
    router.server.wait_for(r"sip: trunks in service: .*natted")
    scenario = (SCENARIOS / "carrier_callee_hangs_up.xml").read_text()
    behind_nat = scenario.replace(
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        f"Via: SIP/2.0/[transport] {NOWHERE}:5060;branch=[branch];rport",
    ).replace(
        "Contact: <sip:+447700900123@[local_ip]:[local_port];transport=[transport]>",
        f"Contact: <sip:+447700900123@{NOWHERE}:5060>",
    )
    assert behind_nat.count(NOWHERE) == 3  # INVITE and ACK Via, INVITE Contact
    pbx = Pbx(network, "pbx_hangs_up.xml", tmp_path)
    e164 = router.number(pbx.uri)
    carrier_call(network, router, behind_nat, e164, tmp_path / "carrier", local_ip=NATTED_CARRIER)
    pbx.passed()
    call = router.call_record(e164)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "callee")


def test_a_recorded_pjsua2_call_has_audio_both_ways_and_both_parties_recorded(
    network: Network, router: Router, capture: Capture, tmp_path: Path
) -> None:
    desk_port = free_port()
    e164 = router.number(f"sip:desk@{PBX}:{desk_port}", record=True)
    desk = subprocess.Popen(
        [*network.exec("pbx"), sys.executable, str(PHONE), "answer", PBX, str(desk_port),
         str(CALLEE_HZ), str(PACKETS)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert desk.stdout is not None
        seen: list[str] = []
        while not (seen and seen[-1].startswith("desk: ready")):
            line = desk.stdout.readline()  # pjlib's start-up lines come first
            assert line, "".join(seen)
            seen.append(line)
        caller = subprocess.run(
            [*network.exec("car"), sys.executable, str(PHONE), "call", CARRIER, PUBLIC,
             str(router.server.sip_port()), e164, str(CALLER_HZ), str(PACKETS)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        desk_output, _ = desk.communicate(timeout=60)
    finally:
        if desk.poll() is None:
            desk.kill()
            desk.communicate()
    assert caller.returncode == 0, caller.stdout[-3000:] + caller.stderr[-3000:]
    assert desk.returncode == 0, desk_output[-3000:]

    ready_line = router.server.wait_for(r"recording: (\S+) of call (\S+) ready")
    recording_id, call_id = ready_line.group(1), ready_line.group(2)
    call = router.api("GET", f"/v1/calls/{call_id}")
    assert (call["disposition"], call["record"]) == ("answered", True)
    status, flac = router.request("GET", f"/v1/recordings/{recording_id}/audio")
    assert status == 200
    audio, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    window = rate // 2
    checked = 0
    for start in range(window, len(audio) - 2 * window, window):
        left, right = audio[start : start + window, 0], audio[start : start + window, 1]
        assert abs(dominant_hz(left) - CALLER_HZ) < 20, (start / rate, dominant_hz(left))
        assert abs(dominant_hz(right) - CALLEE_HZ) < 20, (start / rate, dominant_hz(right))
        checked += 1
    assert checked >= 3

    sent = from_router(capture.stop())
    invite = first(sent, "INVITE ")  # to the desk: our anchored offer
    ok = first(sent, "SIP/2.0 200 OK")  # to the caller: our anchored answer
    for message in (invite, ok):
        assert f"\r\nc=IN IP4 {PUBLIC}\r\n" in message, message
        assert re.search(rf"^o=\S+ \d+ \d+ IN IP4 {re.escape(PUBLIC)}\r?$", message, re.M), message


def test_no_process_of_the_router_is_left_as_root(router: Router) -> None:
    pids = {
        "serve": router.server.process.pid,
        "media worker": int(router.server.wait_for(r"media: worker 0 pid (\d+)").group(1)),
        "postgres": int(router.server.wait_for(r"PostgreSQL in \S+ .*pid (\d+)").group(1)),
    }
    router.server.wait_for(r"privileges: running as callrouter \(uid (\d+)\)")
    assert router.server.http_url.endswith(f":{PRIVILEGED_HTTP_PORT}")  # bound, then dropped
    account = account_for("callrouter")
    assert account is not None
    for name, pid in pids.items():
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
        gids = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
        assert uids is not None and gids is not None
        assert {int(u) for u in uids.groups()} == {account.uid}, (name, uids.group(0))
        assert {int(g) for g in gids.groups()} == {account.gid}, (name, gids.group(0))
    workdir = router.server.data_dir.parent
    for path in (router.server.data_dir, router.server.data_dir / "run", workdir / "recordings"):
        assert path.stat().st_uid == account.uid, path
    data = router.server.data_dir
    state = [*(workdir / "recordings").rglob("*"), *data.rglob("*")]
    root_owned = [
        p
        for p in state
        if p.lstat().st_uid != account.uid and p.relative_to(workdir).parts[1] != "postgres"
    ]
    assert root_owned == []  # the vault, the privacy secret, the lock: all handed over
