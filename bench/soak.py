"""Soak: ``callrouter serve`` at a steady call rate for a long time, a quarter of calls recorded.

``serve`` (embedded PostgreSQL, one media worker) takes calls from a carrier trunk on
127.0.0.2 (created over the API) for two tracking numbers that both point at a SIPp PBX on
127.0.0.1: one recorded, one not. Two SIPp uac processes place ``--rate`` calls/s between
them for ``--minutes``, three in four to the plain number and one in four to the recorded
one, each call held ``--hold-ms``; the recorded calls stream a 440 Hz PCMU tone with SIPp's
rtp_stream, so the recorder writes real audio.

Once a minute the whole process tree of serve (serve, PostgreSQL and its backends, the media
worker) is sampled: resident memory (sum), open descriptors and UDP sockets (socket inodes
found in /proc/net/udp and udp6). Each sample is printed as it is taken; at the end the series
with min/max/slope, and a verdict per series: flat when the mean of the last five samples is
within ``--tolerance`` % of the mean of minutes 2-6 (with fewer samples, the last half against
the first half). The reference is the same process tree earlier in the run. PSS is printed
beside RSS because the RSS sum counts PostgreSQL's shared buffers once per backend that
touched them, which grows as backends warm up without any leak. A last sample is taken
after the last call, idle, and printed apart.

Then every call SIPp placed (its Call-IDs are ``N-PID@IP``) must have exactly one call row:
answered when SIPp completed it, on the right number and trunk, with ``record`` set and one
recording row for the recorded number only.

usage: python3 bench/soak.py [--rate 50] [--minutes 30] [--hold-ms 5000] [--tolerance 10]
needs: apt-get install sip-tester (built with RTPSTREAM, as Debian's is)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.process_memory import sample_tree  # noqa: E402
from bench.soak_series import MIB, Point, report, serve_cpu  # noqa: E402
from callrouter.media.g711 import ulaw_encode  # noqa: E402
from callrouter.store.embedded import EmbeddedPostgres  # noqa: E402
from tests.e2e.serve import ServeProcess, record_of  # noqa: E402
from tests.e2e.sipp import SCENARIOS, free_port  # noqa: E402

PLAIN, RECORDED = "+441515550001", "+441515550002"
CARRIER_IP = "127.0.0.2"
WAV_FORMAT_ULAW = 7

# The carrier's calls: INVITE with SDP (the recorded calls' m= line is SIPp's RTP stream
# port), any provisional answers, 200, ACK, the tone for the recorded ones, BYE.
UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="soak carrier">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:+447700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+447700900123@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio {media_port} RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:+447700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  {play}
  <pause milliseconds="{hold_ms}"/>
  {stop}
  <send retrans="500"><![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:+447700900123@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
</scenario>
"""


@dataclass(frozen=True)
class Caller:
    """One SIPp uac process and what it is to prove."""

    number: str
    recorded: bool
    process: subprocess.Popen[bytes]
    workdir: Path


def write_tone(path: Path) -> None:
    """One second of 440 Hz in G.711 u-law, in a WAV container (format 7) for rtp_stream."""
    t = np.arange(8000) / 8000
    data = ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    # The wave module writes PCM only; the u-law header is the same fields with format 7.
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(data)
    raw = bytearray(path.read_bytes())
    raw[20:22] = WAV_FORMAT_ULAW.to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def api(server: ServeProcess, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        server.http_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {server.operator_key}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def refusals(server: ServeProcess) -> list[str]:
    """What serve refused, from its /metrics: error responses sent by code, SIP requests
    rejected by reason (a call refused never gets a row, so these explain missing ones)."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    found = []
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if (
            (name.startswith("callrouter_sip_responses_total{") and int(name.split('"')[1]) >= 400)
            or name.startswith("callrouter_sip_rejected_total{")
        ) and float(value) > 0:
            found.append(f"{name} {float(value):g}")
    return found


def sample(root: int, started: float) -> Point:
    return Point((time.monotonic() - started) / 60, sample_tree(root))


def progress(p: Point, before: Point | None) -> str:
    """A sample as it is taken: USS of serve, the media workers and PostgreSQL's processes,
    and serve's CPU since the sample ``before`` (100 %: one core, the most it can use)."""
    roles = p.tree.roles
    media = sum(m.uss for r, m in roles.items() if r.startswith("media worker"))
    postgres = sum(m.uss for r, m in roles.items() if r.startswith("pg "))
    serve = roles["serve"].uss if "serve" in roles else 0
    return (
        f"{p.minute:6.1f}  {serve / MIB:9.1f}  {media / MIB:9.1f}  {postgres / MIB:9.1f}"
        f"  {p.tree.postgres_shmem_kib / MIB:8.1f}  {p.tree.fds:8d}  {p.tree.udp:11d}"
        f"  {serve_cpu(before, p):9.0%}"
    )


PROGRESS = "minute  serve USS  media USS     pg USS  pg shmem  open fds  UDP sockets  serve CPU"


def start_caller(
    router: int, work: Path, *, number: str, recorded: bool, rate: float, calls: int, hold_ms: int
) -> Caller:
    workdir = work / ("recorded" if recorded else "plain")
    workdir.mkdir()
    scenario = workdir / "uac.xml"
    scenario.write_text(
        UAC.replace("{media_port}", "[rtpstream_audio_port]" if recorded else "[media_port]")
        .replace("{play}", '<nop><action><exec rtp_stream="tone.wav,-1,0"/></action></nop>'
                 if recorded else "")
        .replace("{stop}", '<nop><action><exec rtp_stream="pause"/></action></nop>'
                 if recorded else "")
        .replace("{hold_ms}", str(hold_ms))
    )  # fmt: skip
    if recorded:
        write_tone(workdir / "tone.wav")
    # -r calls per -rp milliseconds: a quarter of 50 calls/s is 12.5, not a whole number.
    process = subprocess.Popen(
        [
            "sipp", f"127.0.0.1:{router}", "-sf", str(scenario), "-s", number,
            "-r", str(round(rate * 4)), "-rp", "4000", "-m", str(calls),
            "-i", CARRIER_IP, "-mi", CARRIER_IP, "-p", str(free_port()), "-nostdin",
            "-trace_stat", "-fd", "60", "-trace_err",
            "-buff_size", "4194304", "-recv_timeout", "30000",
        ],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return Caller(number, recorded, process, workdir)


def sipp_totals(caller: Caller) -> tuple[int, int, int]:
    """Created, successful and failed calls from SIPp's last statistics line."""
    with next(caller.workdir.glob("*_[0-9]*_.csv")).open() as file:
        rows = list(csv.reader(file, delimiter=";"))
    stats = dict(zip(rows[0], rows[-1], strict=False))
    return (
        int(stats["TotalCallCreated"]),
        int(stats["SuccessfulCall(C)"]),
        int(stats["FailedCall(C)"]),
    )


def free_rtp_range(size: int) -> str:
    """FIRST-LAST: ``size`` ports free now on loopback, below the kernel's ephemeral range and
    outside serve's default 30000-39999, so that neither a test run on this machine (which uses
    the default) nor the ports the kernel hands out collide with the soak's relays."""
    low, high = 10_000, 30_000 - size
    for _ in range(20):
        first = secrets.randbelow((high - low) // 2) * 2 + low
        with ExitStack() as held:
            try:
                for port in range(first, first + size):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"{first}-{first + size - 1}"
    raise SystemExit(f"no {size} free UDP ports in {low}-{high + size}")


async def shared_memory_bound(dsn: str) -> str:
    """What bounds PostgreSQL's shared memory: its main segment, as the server reports it."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            """SELECT current_setting('shared_buffers') AS shared_buffers,
                      sum(allocated_size) AS segment
                 FROM pg_shmem_allocations"""
        )
    finally:
        await connection.close()
    assert row is not None
    return (
        f"the main segment of {row['segment'] / 2**20:.1f} MiB (shared_buffers "
        f"{row['shared_buffers']}; parallel queries' dynamic segments come and go)"
    )


def serve_warnings(server: ServeProcess) -> list[str]:
    """serve's log records at warning level and above, and what it says of recordings other
    than "ready" (a file whose call row is missing is queued for shredding, at info level):
    read once serve has stopped, they explain a wrong row after the run's directory is gone."""
    found = []
    for line in server.lines:
        record = record_of(line)
        if record.get("level") in ("WARNING", "ERROR", "CRITICAL") or (
            record.get("logger") == "callrouter.recordings"
            and record.get("event") != "recording.ready"
        ):
            found.append(
                f"{record.get('time', '')} {record['level']} {record.get('logger', '')}: "
                f"{record.get('message', '')}"
            )
    return found


async def call_rows(dsn: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(
            await connection.fetch(
                """SELECT c.sip_call_id, c.tracking_number, c.trunk, c.state, c.disposition,
                          c.record, count(r.id) AS recordings,
                          count(r.id) FILTER (WHERE r.interrupted) AS interrupted
                     FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
                    GROUP BY c.id"""
            )
        )
    finally:
        await connection.close()


def check_rows(
    rows: list[asyncpg.Record], callers: list[Caller], totals: dict[str, tuple[int, int, int]]
) -> list[str]:
    """What is wrong with the call rows (empty: every call has exactly one correct row)."""
    problems: list[str] = []
    per_call_id = Counter(r["sip_call_id"] for r in rows)
    by_call_id = {r["sip_call_id"]: r for r in rows}
    expected: set[str] = set()
    for caller in callers:
        created, ok, _ = totals[caller.number]
        ids = [f"{n}-{caller.process.pid}@{CARRIER_IP}" for n in range(1, created + 1)]
        expected.update(ids)
        answered = 0
        for call_id in ids:
            row = by_call_id.get(call_id)
            if row is None:
                problems.append(f"{call_id}: no call row")
                continue
            if per_call_id[call_id] != 1:
                problems.append(f"{call_id}: {per_call_id[call_id]} call rows")
            wrong = []
            if row["tracking_number"] != caller.number:
                wrong.append(f"number {row['tracking_number']}")
            if row["trunk"] != "soak-carrier":
                wrong.append(f"trunk {row['trunk']}")
            if row["state"] != "ended":
                wrong.append(f"state {row['state']}")
            if row["record"] != caller.recorded:
                wrong.append(f"record {row['record']}")
            if row["recordings"] != (1 if caller.recorded else 0) or row["interrupted"]:
                wrong.append(f"{row['recordings']} recordings ({row['interrupted']} interrupted)")
            answered += row["disposition"] == "answered"
            if wrong:
                problems.append(f"{call_id}: " + ", ".join(wrong))
        if answered != ok:
            problems.append(f"{caller.number}: {answered} rows answered, SIPp completed {ok}")
    strays = set(per_call_id) - expected
    if strays:
        problems.append(f"{len(strays)} call rows for Call-IDs SIPp never sent")
    return problems


def wait_for_rows(dsn: str, callers: list[Caller], totals: dict[str, tuple[int, int, int]]) -> Any:
    """The call rows once every placed call is ended and every recording is written (or after
    two minutes: what is missing is then reported)."""
    created = sum(t[0] for t in totals.values())
    recorded = sum(totals[c.number][1] for c in callers if c.recorded)
    deadline = time.monotonic() + 120
    while True:
        rows = asyncio.run(call_rows(dsn))
        ended = sum(r["state"] == "ended" for r in rows)
        written = sum(r["recordings"] for r in rows)
        if (ended >= created and written >= recorded) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s (half the maximum)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--hold-ms", type=int, default=5000)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=10.0,
        help="memory: flat within this %% of a role's USS per hour; descriptors and sockets: "
        "late within this %% of early",
    )
    parser.add_argument(
        "--floor", type=float, default=1.0, help="memory: flat below this many MiB/h whatever %%"
    )
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--rtp-ports", type=int, default=2000, help="size of serve's RTP range")
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy serve's log and SIPp's error logs and statistics here before cleaning up",
    )
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("needs SIPp: apt-get install sip-tester")

    work = Path(tempfile.mkdtemp(prefix="callrouter-bench-soak-", dir="/tmp"))
    work.chmod(0o755)  # serve drops to its own user when started as root
    pbx_port = free_port()
    pbx = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "pbx_answer.xml"), "-i", "127.0.0.1",
         "-p", str(pbx_port), "-nostdin", "-buff_size", "4194304"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Per-source limits and call caps well above the offered load: this run measures leaks,
    # not defences. (A 50 calls/s run with the default cap of 500 calls per client, on a
    # machine whose load spiked, had calls refused with 503 while SIPp caught up.)
    limit = str(int(args.rate * 10) + 100)
    cap = str(int(args.rate * args.hold_ms / 1000 * 10) + 100)
    # SIP and HTTP on ports the kernel picks (ServeProcess passes 0), RTP on a range of its own.
    rtp = free_rtp_range(args.rtp_ports)
    server = ServeProcess(
        work / "data", "--recordings-dir", str(work / "recordings"),
        "--sip-rate-per-second", limit, "--sip-rate-burst", limit, "--media-ports", rtp,
        "--sip-max-calls-per-client", cap, "--sip-max-calls-per-trunk", cap,
    )  # fmt: skip
    callers: list[Caller] = []
    samples: list[Point] = []
    try:
        server.wait_ready()
        dsn = EmbeddedPostgres.running_dsn(server.data_dir / "postgres")
        if dsn is None:
            raise SystemExit("serve's embedded PostgreSQL is not running")
        shmem_bound = asyncio.run(shared_memory_bound(dsn))
        sip_port = server.sip_port()
        api(server, "POST", "/v1/trunks", {"name": "soak-carrier", "networks": [CARRIER_IP]})
        client = api(server, "POST", "/v1/clients", {"name": "Soak"})
        for number, record in ((PLAIN, False), (RECORDED, True)):
            api(server, "POST", "/v1/numbers", {
                "client_id": client["id"], "e164": number, "record": record,
                "destination": f"sip:desk@127.0.0.1:{pbx_port}",
            })  # fmt: skip
        seconds = args.minutes * 60
        print(
            f"soak: {args.rate:g} calls/s for {args.minutes:g} min, {args.hold_ms} ms calls, "
            f"one in four recorded (440 Hz PCMU from SIPp rtp_stream); serve's RTP ports {rtp}"
        )
        started = time.monotonic()
        for number, recorded, share in ((PLAIN, False, 0.75), (RECORDED, True, 0.25)):
            rate = args.rate * share
            callers.append(
                start_caller(
                    sip_port,
                    work,
                    number=number,
                    recorded=recorded,
                    rate=rate,
                    calls=round(rate * seconds),
                    hold_ms=args.hold_ms,
                )
            )
        print(PROGRESS, flush=True)
        deadline = started + seconds + 120  # the last calls' hold time and retransmissions
        next_sample = started
        while time.monotonic() < deadline:
            if time.monotonic() >= next_sample:
                s = sample(server.process.pid, started)
                samples.append(s)
                print(progress(s, samples[-2] if len(samples) > 1 else None), flush=True)
                next_sample += args.every
            if all(c.process.poll() is not None for c in callers):
                break
            if server.process.poll() is not None:
                raise SystemExit("serve exited:\n" + "\n".join(server.lines[-20:]))
            time.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        idle = sample(server.process.pid, started)
        for caller in callers:
            if caller.process.poll() is None:
                print(f"SIPp for {caller.number} still running at the deadline: stopped")
                caller.process.kill()
            caller.process.wait(30)
        totals = {c.number: sipp_totals(c) for c in callers}
        rows = wait_for_rows(dsn, callers, totals)
        refused = refusals(server)
    finally:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "serve.log").write_text("\n".join(server.lines) + "\n")
            for kept in [*work.rglob("*_errors.log"), *work.rglob("*_.csv")]:
                shutil.copy(kept, args.keep / f"{kept.parent.name}-{kept.name}")
        for caller in callers:
            if caller.process.poll() is None:
                caller.process.kill()
                caller.process.wait()
        if server.process.poll() is None:
            server.stop()
        pbx.kill()
        pbx.wait()
        shutil.rmtree(work, ignore_errors=True)

    # Minute 0 is before the first call: the verdicts are over the run under load.
    lines, flat = report(samples[1:], idle, args.tolerance, args.floor, shmem_bound)
    print("\n".join(lines))
    print()
    for caller in callers:
        created, ok, failed = totals[caller.number]
        kind = "recorded" if caller.recorded else "plain"
        print(f"{kind:8s} {caller.number}: SIPp placed {created}, completed {ok}, failed {failed}")
    warnings = serve_warnings(server)
    print(f"serve logged {len(warnings)} warnings, errors and recording notes")
    for warning in warnings[:20]:
        print("  " + warning)
    if len(warnings) > 20:
        print(f"  ... and {len(warnings) - 20} more")
    print("serve refused: " + ("; ".join(refused) if refused else "nothing"))
    problems = check_rows(rows, callers, totals)
    kinds = Counter(problem.split(": ", 1)[-1].split(",")[0] for problem in problems)
    if kinds:
        print("wrong rows by kind: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()))
    for problem in problems[:20]:
        print("  " + problem)
    if len(problems) > 20:
        print(f"  ... and {len(problems) - 20} more")
    print(
        f"call rows: {len(rows)}; "
        + ("every call has exactly one correct row" if not problems else f"{len(problems)} wrong")
    )
    print("verdict: " + ("flat" if flat else "NOT flat") + ", rows " + (
        "correct" if not problems else "WRONG"))  # fmt: skip
    if problems or not flat:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
