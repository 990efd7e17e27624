"""SIP defences of ``callrouter serve`` under attack tools: a flood, SIPVicious, concurrency caps.

The router trusts 127.0.0.1 and 127.0.0.2 (its trunk); 127.0.0.3 and up are strangers on the
internet. Legitimate calls come from SIPp on 127.0.0.2 to a SIPp PBX on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import world_traversable_tempdir
from tests.e2e.blaster import blast
from tests.e2e.router_api import Router
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import (
    SCENARIOS,
    SIPP_TIMEOUT,
    free_port,
    request_scenario,
    run_sipp,
    sipp_command,
)

CARRIERS = "127.0.0.1/32, 127.0.0.2/32"
SVTOOLS = Path(sys.executable).parent
BANNER = re.compile(r"\\r\\n(server|user-agent):|callrouter|twisted|python|aiohttp", re.I)
"""What would name the product in a captured answer (svmap -d prints them as Python bytes)."""
STRICT_MAX_BYTES = 4096
STRICT_MAX_HEADERS = 20


@contextmanager
def serving(*args: str, carriers: str = CARRIERS) -> Iterator[Router]:
    workdir = world_traversable_tempdir("callrouter-defences-")
    server = ServeProcess(workdir / "data", "--sip-carriers", carriers, *args)
    try:
        server.wait_ready()
        yield Router(server)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def guarded() -> Iterator[Router]:
    """Strangers hear nothing; a client may have one call up at a time, the trunk two."""
    with serving(
        "--sip-unknown-sources",
        "drop",
        "--sip-max-calls-per-client",
        "1",
        "--sip-max-calls-per-trunk",
        "2",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def strict() -> Iterator[Router]:
    """Messages of at most 4,096 bytes and 20 header fields; a trunk source (127.0.0.6 too)
    banned past 40 requests in 2 s."""
    with serving(
        "--sip-max-message-bytes",
        str(STRICT_MAX_BYTES),
        "--sip-max-headers",
        str(STRICT_MAX_HEADERS),
        "--sip-carrier-flood-requests",
        "40",
        carriers=CARRIERS + ", 127.0.0.6/32",
    ) as server:
        yield server


def pbx(
    tmp_path: Path, calls: int, scenario: str = "pbx_answer.xml", host: str = "127.0.0.1"
) -> tuple[subprocess.Popen[str], str]:
    """A SIPp PBX on ``host`` answering ``calls`` calls, and its URI."""
    port = free_port()
    command = sipp_command(SCENARIOS / scenario, 0, tmp_path, calls=calls, local_ip=host)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(port)
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return process, f"sip:desk@{host}:{port}"


def test_a_flood_from_one_source_does_not_starve_another_sources_calls(
    router: Router, tmp_path: Path
) -> None:
    calls = 200
    (tmp_path / "pbx").mkdir()
    (tmp_path / "carrier").mkdir()
    desk, uri = pbx(tmp_path / "pbx", calls)
    try:
        e164 = router.number(uri)
        carrier = subprocess.Popen(
            sipp_command(
                "uac",
                router.port,
                tmp_path / "carrier",
                service=e164,
                calls=calls,
                local_ip="127.0.0.2",
                extra=("-r", "10"),
            ),
            cwd=tmp_path / "carrier",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # The flood starts once calls are flowing, so it lands in the middle of them.
        router.server.wait_for(rf"call: \S+ to \{e164} ended answered")
        flood = blast("127.0.0.3", ("127.0.0.1", router.port), 20_000)
        output, _ = carrier.communicate(timeout=SIPP_TIMEOUT)
    finally:
        if desk.poll() is None:
            desk.kill()
        desk.communicate()
    # SIPp's own count: a call succeeds when it got its 200 and its BYE was answered.
    succeeded = re.search(r"Successful call +\| +\d+ +\| +(\d+)", output)
    assert succeeded is not None, output[-3000:]
    answered = int(succeeded.group(1))
    print(
        f"\nflood: {flood.sent} packets in {flood.seconds:.2f} s ({flood.rate:,.0f}/s) from "
        f"127.0.0.3, {len(flood.answers)} answered; legitimate calls completed "
        f"{answered}/{calls} ({100 * answered / calls:.1f} %)"
    )
    assert answered / calls >= 0.995, output[-3000:] + router.server.output[-3000:]
    router.server.wait_for(r"sip: banned 127\.0\.0\.3 for 300 s: more than 16 requests in 2 s")
    # The 16 requests before the ban got one stateless 403 each; the other 19,984 nothing.
    assert 1 <= len(flood.answers) <= 16
    assert all(a.startswith(b"SIP/2.0 403 ") for a in flood.answers)


def sv(tool: str, source: str, port: int, *args: str) -> str:
    """Run a SIPVicious tool from ``source`` against the router; its whole output."""
    result = subprocess.run(
        [str(SVTOOLS / f"sipvicious_{tool}"), "-b", source, "-p", str(port), *args, "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


def test_sipvicious_from_an_allowed_source_learns_no_product_or_version(
    router: Router, tmp_path: Path
) -> None:
    found = sv("svmap", "127.0.0.2", router.port, "-d")
    # That it is a SIP server is no secret; what it runs is.
    assert re.search(rf"\| 127\.0\.0\.1:{router.port} +\| unknown +\|", found), found
    assert not BANNER.search(found), found

    wordlist = tmp_path / "words"
    wordlist.write_text("secret\npassword\n1234\n")
    # REGISTER is refused with 405 and nothing ever asks for credentials: no digest to guess.
    cracked = sv("svcrack", "127.0.0.2", router.port, "-u", "1000", "-d", str(wordlist))
    assert "found nothing" in cracked and "|" not in cracked, cracked
    # Nor is there a REGISTER (or INVITE) answer that tells extensions apart.
    for method in ("REGISTER", "INVITE"):
        enumerated = sv("svwar", "127.0.0.2", router.port, "-e", "100-110", "-m", method)
        assert "found nothing" in enumerated and "|" not in enumerated, enumerated


def test_sipvicious_from_a_stranger_gets_one_403_and_no_more(router: Router) -> None:
    found = sv("svmap", "127.0.0.4", router.port, "-d")
    assert found.count("SIP/2.0 403 Forbidden") == 1, found
    assert not BANNER.search(found), found


def test_in_drop_mode_sipvicious_from_a_stranger_finds_nothing(guarded: Router) -> None:
    found = sv("svmap", "127.0.0.4", guarded.port, "-d")
    assert "SIP/2.0" not in found and "127.0.0.1:" not in found, found
    assert "found nothing" in found, found
    swept = sv("svwar", "127.0.0.4", guarded.port, "-e", "100-102", "-m", "INVITE")
    assert "SIP/2.0" not in swept and "|" not in swept, swept


def test_calls_over_the_client_and_trunk_caps_get_503_with_retry_after(
    guarded: Router, tmp_path: Path
) -> None:
    for name in ("pbx", "first", "second", "refused"):
        (tmp_path / name).mkdir()
    desk, uri = pbx(tmp_path / "pbx", 2)
    first, same_client = guarded.number(uri), guarded.number(uri)
    second = guarded.number(uri, guarded.client("Beta"))
    third = guarded.number(uri, guarded.client("Gamma"))
    up: list[subprocess.Popen[str]] = []

    def hold(e164: str, folder: str) -> None:
        """A call that stays up for 4 s once answered."""
        command = sipp_command(
            "uac", guarded.port, tmp_path / folder, service=e164, extra=("-d", "4000")
        )
        up.append(
            subprocess.Popen(
                command,
                cwd=tmp_path / folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        guarded.wait_for_call(e164)

    def refused(e164: str) -> None:
        busy = request_scenario("INVITE", 503, checks=(r"Retry-After: 5",))
        result = run_sipp(busy, guarded.port, tmp_path / "refused", service=e164)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    try:
        hold(first, "first")
        refused(same_client)  # Acme has its one call
        hold(second, "second")  # Beta may: the trunk carries one call so far
        refused(third)  # Gamma may not: the trunk carries two
        for call in up:
            output, _ = call.communicate(timeout=SIPP_TIMEOUT)
            assert call.returncode == 0, output[-2000:]
    finally:
        for process in (*up, desk):
            if process.poll() is None:
                process.kill()
            process.communicate()


def test_a_destination_outside_every_trunk_still_hangs_up_its_call(
    guarded: Router, tmp_path: Path
) -> None:
    """In drop mode strangers hear nothing, but the PBX the router called (127.0.0.5, in no
    trunk) is no stranger inside its own dialog: its BYE ends the call."""
    (tmp_path / "pbx").mkdir()
    desk, uri = pbx(tmp_path / "pbx", 1, "pbx_hangs_up.xml", host="127.0.0.5")
    try:
        e164 = guarded.number(uri, guarded.client("Delta"))
        result = run_sipp(
            SCENARIOS / "carrier_callee_hangs_up.xml", guarded.port, tmp_path, service=e164
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        output, _ = desk.communicate(timeout=SIPP_TIMEOUT)
        assert desk.returncode == 0, output[-2000:]
        guarded.server.wait_for(rf"call: \S+ to \{e164} ended answered", 30)
    finally:
        if desk.poll() is None:
            desk.kill()
        desk.communicate()


def sip_request(
    method: str,
    target: str,
    transport: str,
    source: tuple[str, int],
    n: int,
    *,
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> bytes:
    host, port = source
    head = (
        f"{method} sip:{target}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK-defence-{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+447700900123@{host}>;tag=f{n}\r\n"
        f"To: <sip:{target}@127.0.0.1>\r\n"
        f"Call-ID: defence-{n}@{host}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:+447700900123@{host}:{port};transport={transport.lower()}>\r\n"
        + (f"Content-Type: {content_type}\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def padded_sdp(size: int) -> bytes:
    """An SDP offer of about ``size`` bytes (attribute lines nobody reads)."""
    sdp = (
        b"v=0\r\no=carrier 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    while len(sdp) < size:
        sdp += b"a=x-padding:" + b"p" * 60 + b"\r\n"
    return sdp


def connect(port: int, source: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    client.settimeout(10)
    return client


def read_until_closed(client: socket.socket) -> tuple[bytes, bool]:
    """Everything the router sends until it closes the connection (bounded by the socket's
    10 s timeout, which fails the test); and whether it closed with a reset (an abort)."""
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
    except ConnectionResetError:
        return received, True
    return received, False


def reset_without_a_byte(port: int, source: str) -> bool:
    """Whether a connection from ``source`` is reset before any byte comes back (the reset
    may already fail the connect, or the request sent on it)."""
    try:
        with connect(port, source) as client:
            client.sendall(sip_request("OPTIONS", "ping", "TCP", client.getsockname(), 99))
            return read_until_closed(client) == (b"", True)
    except ConnectionError:
        return True


def test_a_flood_over_tcp_closes_the_sources_connection_and_refuses_it_while_banned(
    strict: Router,
) -> None:
    port = strict.server.sip_port("tcp")
    # The second connection of the source stays silent: it goes with its sibling all the same.
    with connect(port, "127.0.0.6") as flooder, connect(port, "127.0.0.6") as idle:
        source = flooder.getsockname()
        flooder.sendall(
            b"".join(sip_request("OPTIONS", "ping", "TCP", source, n) for n in range(60))
        )
        # Aborted: the answers to the requests before the ban, if still unsent, go with it.
        assert read_until_closed(flooder)[1]
        assert read_until_closed(idle) == (b"", True)
    strict.server.wait_for(r"sip: banned 127\.0\.0\.6 for 300 s: more than 40 requests in 2 s")
    strict.server.wait_for(r"closing tcp connection from 127\.0\.0\.6:\d+: its source is banned")

    # While the ban lasts a new connection is accepted by the kernel and reset at once.
    assert reset_without_a_byte(port, "127.0.0.6")
    # The other trunk source is not touched by the ban.
    with connect(port, "127.0.0.2") as other:
        other.sendall(sip_request("OPTIONS", "ping", "TCP", other.getsockname(), 100))
        assert other.recv(65536).startswith(b"SIP/2.0 200 OK\r\n")
    with urllib.request.urlopen(strict.server.wait_for(r"metrics: (\S+)").group(1)) as scrape:
        text = scrape.read().decode()
    # Two closed as the ban began, one refused at accept.
    refused = re.search(r'callrouter_sip_connections_refused_total\{reason="banned"\} (\S+)', text)
    assert refused is not None and float(refused.group(1)) == 3, text[-3000:]
    assert re.search(r'callrouter_sip_rejected_total\{reason="banned"\} [1-9]', text)


def busy(invite: bytes) -> bytes:
    """The destination's 486 to ``invite`` (so the call ends and the server stops at once)."""
    head = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    kept = [
        line + (b";tag=desk" if line.lower().startswith(b"to:") else b"")
        for line in head[1:]
        if line.split(b":", 1)[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
    ]
    return b"\r\n".join([b"SIP/2.0 486 Busy Here", *kept, b"Content-Length: 0", b"", b""])


def test_a_request_over_max_message_bytes_or_max_headers_gets_513_one_under_is_routed(
    strict: Router,
) -> None:
    port = strict.server.sip_port("tcp")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as desk,
        connect(port, "127.0.0.2") as carrier,
    ):
        desk.bind(("127.0.0.1", 0))
        desk.settimeout(10)
        e164 = strict.number(f"sip:desk@127.0.0.1:{desk.getsockname()[1]}")
        under = sip_request("INVITE", e164, "TCP", carrier.getsockname(), 1, body=padded_sdp(3000))
        assert 3000 < len(under) < STRICT_MAX_BYTES
        carrier.sendall(under)
        # Routed: the destination is offered the call, with the whole SDP.
        offered, router = desk.recvfrom(65536)
        assert offered.startswith(b"INVITE sip:desk@127.0.0.1:") and padded_sdp(3000) in offered
        desk.sendto(busy(offered), router)
        strict.server.wait_for(rf"call: \S+ to \{e164} ended")

        over = sip_request(
            "INVITE", e164, "TCP", carrier.getsockname(), 2, body=padded_sdp(STRICT_MAX_BYTES)
        )
        carrier.sendall(over)
        answered, _ = read_until_closed(carrier)
        # §21.5.14, then the connection is closed: the body cannot be skipped reliably.
        (refusal,) = [m for m in answered.split(b"SIP/2.0 ")[1:] if b"defence-2" in m]
        assert refusal.startswith(b"513 Message Too Large\r\n"), answered[-600:]

    # Over UDP the same limit gives the same answer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.2", 0))
        udp.settimeout(10)
        datagram = sip_request(
            "INVITE", e164, "UDP", udp.getsockname(), 3, body=padded_sdp(STRICT_MAX_BYTES)
        )
        udp.sendto(datagram, ("127.0.0.1", strict.port))
        answer, _ = udp.recvfrom(65536)
        assert answer.startswith(b"SIP/2.0 513 Message Too Large\r\n")

        # So does a request with more header fields than max_headers, small as it is.
        head, _, _ = sip_request("OPTIONS", "ping", "UDP", udp.getsockname(), 4).partition(
            b"\r\n\r\n"
        )
        fillers = b"".join(b"\r\nX-Filler-%d: x" % i for i in range(STRICT_MAX_HEADERS))
        udp.sendto(head + fillers + b"\r\n\r\n", ("127.0.0.1", strict.port))
        answer, _ = udp.recvfrom(65536)
        assert answer.startswith(b"SIP/2.0 513 Message Too Large\r\n"), answer
        assert b"defence-4" in answer and b"too many header fields" in answer
