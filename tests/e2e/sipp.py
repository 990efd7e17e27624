"""Run SIPp (Debian's sip-tester) against a router, with scenarios written per test."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

SIPP_TIMEOUT = 60

SCENARIOS = Path(__file__).with_name("sipp")


def free_port() -> int:
    """A port free for both UDP and TCP on loopback, for SIPp's own side."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port")


def request_scenario(
    method: str, status: int, *, headers: str = "", checks: tuple[str, ...] = ()
) -> str:
    """One request, an optional 100, the expected final ``status`` (ACKed for an INVITE), and
    regular expressions each of which must match the final response."""
    actions = "".join(
        f'<ereg regexp="{escape(c)}" search_in="msg" check_it="true" assign_to="{i}"/>'
        for i, c in enumerate(checks, start=1)
    )
    reference = (
        f'<Reference variables="{",".join(str(i) for i in range(1, len(checks) + 1))}"/>'
        if checks
        else ""
    )
    ack = (
        """<send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:+447700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>"""
        if method == "INVITE"
        else ""
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{method} expects {status}">
  <send retrans="500"><![CDATA[
      {method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+447700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 {method}
      Contact: <sip:+447700900123@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
{headers}      Content-Length: 0

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="{status}"><action>{actions}</action></recv>
  {ack}
  {reference}
</scenario>
"""


def sipp_command(
    scenario: Path | str,
    port: int,
    tmp_path: Path,
    *,
    transport: str = "udp",
    service: str = "+441515550001",
    calls: int = 1,
    local_ip: str = "127.0.0.1",
    remote_host: str = "127.0.0.1",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The SIPp command line for a scenario (a file, XML text, or ``uac`` for SIPp's own)."""
    if isinstance(scenario, Path):
        chosen = ["-sf", str(scenario)]
    elif scenario.lstrip().startswith("<"):
        path = tmp_path / "scenario.xml"
        path.write_text(scenario)
        chosen = ["-sf", str(path)]
    else:
        chosen = ["-sn", scenario, "-d", "200"]
    mode = {"udp": "u1", "tcp": "t1"}[transport]
    return [
        "sipp",
        f"{remote_host}:{port}",
        *chosen,
        "-s",
        service,
        "-m",
        str(calls),
        "-t",
        mode,
        "-i",
        local_ip,
        "-p",
        str(free_port()),
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(tmp_path / "sipp-errors.log"),
        *extra,
    ]


def sipp_errors(tmp_path: Path) -> str:
    errors = tmp_path / "sipp-errors.log"
    return errors.read_text(errors="replace")[-4000:] if errors.exists() else ""


def run_sipp(
    scenario: Path | str, port: int, tmp_path: Path, **options: Any
) -> subprocess.CompletedProcess[str]:
    """Run SIPp to completion against 127.0.0.1:``port``; its error log is appended to stderr."""
    result = subprocess.run(
        sipp_command(scenario, port, tmp_path, **options),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SIPP_TIMEOUT,
        check=False,
    )
    result.stderr += sipp_errors(tmp_path)
    return result


async def run_sipp_async(
    scenario: Path | str, port: int, tmp_path: Path, **options: Any
) -> tuple[int, str]:
    """The same, without blocking the event loop (for peers running in this process)."""
    process = await asyncio.create_subprocess_exec(
        *sipp_command(scenario, port, tmp_path, **options),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), SIPP_TIMEOUT)
    code = await process.wait()
    return code, output.decode(errors="replace")[-3000:] + sipp_errors(tmp_path)


class Pbx:
    """A SIPp process playing the client's phone system for one call."""

    def __init__(
        self, scenario: str | Path, tmp_path: Path, calls: int = 1, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.dir = tmp_path / f"pbx-{self.port}"
        self.dir.mkdir()
        path = scenario if isinstance(scenario, Path) else SCENARIOS / scenario
        command = sipp_command(path, 0, self.dir, calls=calls)
        command[1] = "-bind_local"  # a server: no remote host, listen on -p
        command = [c for c in command if c != "-timeout_error"]
        port_at = command.index("-p") + 1
        command[port_at] = str(self.port)
        self.process = subprocess.Popen(
            command, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    @property
    def uri(self) -> str:
        return f"sip:desk@127.0.0.1:{self.port}"

    def finished(self) -> tuple[int, str]:
        output, _ = self.process.communicate(timeout=60)
        errors = self.dir / "sipp-errors.log"
        return self.process.returncode, output[-2000:] + (
            errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
        )


def call_through(
    port: int,
    number: Callable[[str], str],
    pbx_scenario: str,
    carrier_scenario: str,
    tmp_path: Path,
) -> str:
    """A call from a SIPp carrier to a SIPp PBX through the router on SIP ``port``, whose
    tracking number ``number`` makes for the PBX's URI; both scenarios must pass. Returns the
    tracking number."""
    pbx = Pbx(pbx_scenario, tmp_path)
    try:
        e164 = number(pbx.uri)
        carrier = run_sipp(SCENARIOS / carrier_scenario, port, tmp_path, service=e164)
        assert carrier.returncode == 0, carrier.stdout[-3000:] + carrier.stderr[-3000:]
        code, output = pbx.finished()
        assert code == 0, output
    finally:
        if pbx.process.poll() is None:
            pbx.process.kill()
            pbx.process.communicate()
    return e164
