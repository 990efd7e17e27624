"""The media worker: relayed RTP packets per second against a bare UDP relay (same run), and
how many recorded calls one and two workers carry in real time with no packet late.

(1) Relay: one worker process, N calls, 172-byte packets (20 ms of PCMU) blasted from sockets
    in this process at leg A of every call; the figure is the packets that come out of leg B
    per second. The references, in the same run, are a bare relay in a subprocess: a
    DatagramProtocol per call that sends every datagram on, on uvloop (the worker's loop) and
    on asyncio's own loop.
(2) Recording, with one worker and then two (the calls placed over both as ``serve`` places
    them, each worker on its own slice of the ports): steps of 10, 25, 50, 100, 200, ...
    recorded calls per worker, each leg sending 50 packets a second in real time, both
    parties' packets relayed, then every call deleted and its recording finalised (decrypt,
    FLAC, seal). A packet is counted against the workers when the recorder counted it late or
    it never reached the recorder (dropped by a full socket buffer). The figure is the largest
    step with no packet late or lost (the steps double up to the first that fails, then the
    gap is halved down to a tenth), and the ratio of two workers' figure to one's. The parties
    send from ``--senders`` processes; a step whose senders fell behind schedule by more than
    250 ms does not count. With two workers on a 2-core machine, workers and senders compete
    for the cores, so the two-worker figure there is a floor.

Loopback only, RTP ports below the ephemeral range; the recordings go to a temporary
directory on the disk /tmp is on (fsync included).

    python3 bench/media.py [--calls 20] [--seconds 5] [--record-seconds 4] [--max-calls 1600]
                           [--senders 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from callrouter.config import MediaConfig  # noqa: E402
from callrouter.media.control import MediaWorkerProcess, RecordingSettings  # noqa: E402
from callrouter.media.g711 import ulaw_encode  # noqa: E402
from callrouter.media.pool import MediaPool, MediaSlot  # noqa: E402
from callrouter.media.prompt import tone  # noqa: E402
from callrouter.media.recording import raw_directory  # noqa: E402
from callrouter.media.relay import PortAllocator  # noqa: E402
from callrouter.vault import Vault  # noqa: E402

PAYLOAD = ulaw_encode(tone(440.0, 0.02))  # 160 bytes: 20 ms of PCMU
HEADER = struct.Struct("!BBHII")
PACKET = HEADER.pack(0x80, 0, 1, 160, 0x1234) + PAYLOAD  # 172 bytes on the wire
LATE_LIMIT = 0.01

BARE_RELAY = """
import asyncio, json, os, sys
destinations = json.loads(sys.argv[2])  # per call: where leg B sends
forwarded = 0

class Forward(asyncio.DatagramProtocol):
    def __init__(self, out, destination):
        self.out, self.destination = out, tuple(destination)
    def datagram_received(self, data, addr):
        global forwarded
        self.out.sendto(data, self.destination)
        forwarded += 1

def report():
    if not os.read(0, 4096):
        os._exit(0)
    print(forwarded, flush=True)

async def main():
    loop = asyncio.get_running_loop()
    inputs = []
    for destination in destinations:
        out, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Forward(out, destination), local_addr=("127.0.0.1", 0))
        inputs.append(transport.get_extra_info("sockname")[1])
    loop.add_reader(0, report)
    print(json.dumps(inputs), flush=True)
    await asyncio.Event().wait()

if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def udp_socket(receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind(("127.0.0.1", 0))
    return sock


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Targets = list[tuple[socket.socket, tuple[str, int]]]


async def blast(targets: Targets, seconds: float) -> int:
    """Send packets as fast as this process can, round-robin over ``targets``."""
    loop = asyncio.get_running_loop()
    sent = 0
    end = loop.time() + seconds
    while loop.time() < end:
        for _ in range(16):
            for sock, target in targets:
                try:
                    sock.sendto(PACKET, target)
                except BlockingIOError:
                    continue
                sent += 1
        await asyncio.sleep(0)
    return sent


async def relayed(
    targets: Targets, forwarded: Callable[[], Awaitable[int]], seconds: float
) -> tuple[float, float]:
    """(packets/s offered, packets/s sent on by the relay) over ``seconds``, after a warm-up."""
    await blast(targets, 1.0)
    before = await forwarded()
    sent = await blast(targets, seconds)
    await asyncio.sleep(0.05)  # what is still in the relay's socket buffers
    return sent / seconds, (await forwarded() - before) / seconds


async def asked(bare: asyncio.subprocess.Process) -> int:
    """The bare relay's count of packets sent on."""
    assert bare.stdin is not None and bare.stdout is not None
    bare.stdin.write(b"?\n")
    return int(await bare.stdout.readline())


async def relay_figures(root: Path, calls: int, seconds: float) -> None:
    # The parties' sockets. Leg B's sockets are never read: the relays count what they send
    # on, so this process spends its core on sending alone (the kernel drops the rest).
    senders = [udp_socket() for _ in range(calls)]
    sinks = [udp_socket(receive_buffer=4096) for _ in range(calls)]
    destinations = [sink.getsockname() for sink in sinks]

    worker = MediaWorkerProcess(root / "relay.sock", "127.0.0.1", "24000-24999")
    await worker.start()
    try:
        targets = []
        for n, (sender, destination) in enumerate(zip(senders, destinations, strict=True)):
            ports = await worker.command("create", call=f"c{n}")
            await worker.command(
                "signal", call=f"c{n}", leg="a", rtp=list(sender.getsockname()), nat=False
            )
            await worker.command("signal", call=f"c{n}", leg="b", rtp=list(destination), nat=False)
            targets.append((sender, (ports["a"][0], ports["a"][1])))

        async def worker_forwarded() -> int:
            replies = [await worker.command("query", call=f"c{n}") for n in range(calls)]
            return sum(reply["stats"]["a"]["forwarded"] for reply in replies)

        pid = worker.pid
        assert pid is not None
        cpu, started = cpu_seconds(pid), time.monotonic()
        offered, ours = await relayed(targets, worker_forwarded, seconds)
        cpu = (cpu_seconds(pid) - cpu) / (time.monotonic() - started)
    finally:
        await worker.stop()

    references = {}
    for loop_name in ("uvloop", "asyncio"):
        bare = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BARE_RELAY,
            loop_name,
            json.dumps(destinations),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert bare.stdout is not None
            inputs = json.loads(await bare.stdout.readline())
            targets = [
                (sender, ("127.0.0.1", port)) for sender, port in zip(senders, inputs, strict=True)
            ]
            references[loop_name] = await relayed(targets, partial(asked, bare), seconds)
        finally:
            bare.terminate()
            await bare.wait()
    for sock in senders + sinks:
        sock.close()

    print(
        f"(1) relay, {calls} calls, 172-byte packets blasted at leg A for {seconds:.0f} s; "
        "packets/s sent on out of leg B"
    )
    print(f"  media worker (uvloop):   {ours:9.0f}/s   (offered {offered:.0f}/s; CPU {cpu:.0%})")
    for loop_name, (offered, bare_rate) in references.items():
        label = f"bare relay ({loop_name}):"
        print(f"  {label:24} {bare_rate:9.0f}/s   (offered {offered:.0f}/s)")
    for loop_name, (_, bare_rate) in references.items():
        label = f"ratio worker / {loop_name}:"
        print(f"  {label:24} {ours / bare_rate:9.2f}")


@dataclass
class Party:
    sock: socket.socket
    ssrc: int


@dataclass
class RecordedCall:
    name: str
    caller: Party
    callee: Party
    ports: dict[str, tuple[str, int]]


SENDER = """
import json, math, socket, struct, sys, time
spec = json.loads(sys.argv[1])
start, count = spec["start"], spec["count"]
payload = bytes.fromhex(spec["payload"])
header = struct.Struct("!BBHII")
legs = []
for fd, target, ssrc, offset in spec["legs"]:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    legs.append((sock, tuple(target), ssrc, offset))
sent_up_to = [0] * len(legs)
sent = 0
worst = 0.0
while True:
    now = time.monotonic()
    done = True
    for n, (sock, target, ssrc, offset) in enumerate(legs):
        due = max(0, min(count, math.floor((now - start - offset) / 0.02) + 1))
        if sent_up_to[n] < due:
            worst = max(worst, now - (start + offset + sent_up_to[n] * 0.02))
        for index in range(sent_up_to[n], due):
            packet = header.pack(0x80, 0, index & 0xFFFF, index * 160, ssrc) + payload
            try:
                sock.sendto(packet, target)
            except BlockingIOError:
                continue  # counted as lost: the sender's own socket was full
            sent += 1
        sent_up_to[n] = max(sent_up_to[n], due)
        done = done and sent_up_to[n] >= count
    if done:
        break
    time.sleep(0.005)
print(json.dumps({"sent": sent, "lag": worst}), flush=True)
"""


async def send_in_real_time(
    calls: list[RecordedCall], seconds: float, senders: int, started: Callable[[], None]
) -> tuple[int, float]:
    """Every leg sends a packet every 20 ms (the calls spread over the 20 ms), from
    ``senders`` processes sharing the legs, so that the sending is not what limits the
    workers; returns (packets sent, the worst lag behind schedule of any sender).
    ``started`` is called when the first packet is due."""
    legs = [
        (party.sock.fileno(), call.ports[leg], party.ssrc, 0.02 * n / len(calls))
        for n, call in enumerate(calls)
        for party, leg in ((call.caller, "a"), (call.callee, "b"))
    ]
    start = time.monotonic() + 2.0  # time to start the senders, on the system-wide clock
    processes = []
    for share in range(senders):
        mine = legs[share::senders]
        spec = {
            "start": start,
            "count": round(seconds / 0.02),
            "payload": PAYLOAD.hex(),
            "legs": mine,
        }
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SENDER,
                json.dumps(spec),
                pass_fds=[fd for fd, *_ in mine],
                stdout=asyncio.subprocess.PIPE,
            )
        )
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    started()
    sent, lag = 0, 0.0
    for process in processes:
        out, _ = await process.communicate()
        figures = json.loads(out)
        sent += figures["sent"]
        lag = max(lag, figures["lag"])
    return sent, lag


class Workers:
    """``count`` recording workers that calls are placed on as serve places them (media.pool),
    each with its slice of the port range as serve cuts it (MediaConfig.port_slices)."""

    def __init__(self, root: Path, count: int, events: asyncio.Queue[dict[str, Any]]) -> None:
        settings = RecordingSettings(
            root / "recordings", root / "vault" / "keyring.json", root / "keys"
        )
        Vault.open(settings.key_ring, settings.keys_dir)
        slices = MediaConfig(workers=count, ports="20000-27999").port_slices()
        self.processes = [
            MediaWorkerProcess(
                root / f"record-{n}.sock",
                "127.0.0.1",
                f"{first}-{last}",
                on_event=events.put_nowait,
                command_timeout=60.0,
                recording=dataclasses.replace(
                    settings, raw_dir=raw_directory(settings.recordings_dir, n)
                ),
                name=str(n),
            )
            for n, (first, last) in enumerate(slices)
        ]
        self.pool = MediaPool(
            [
                MediaSlot(n, process, PortAllocator(first, last))
                for n, (process, (first, last)) in enumerate(
                    zip(self.processes, slices, strict=True)
                )
            ]
        )

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid or 0) for process in self.processes)


async def recording_step(
    workers: Workers,
    events: asyncio.Queue[dict[str, Any]],
    calls: int,
    seconds: float,
    senders: int,
) -> dict[str, float]:
    made: list[RecordedCall] = []
    for n in range(calls):
        name = f"r{calls}-{n}"
        caller = Party(udp_socket(receive_buffer=4096), 0x10000 + n)
        callee = Party(udp_socket(receive_buffer=4096), 0x20000 + n)
        made.append(RecordedCall(name, caller, callee, {}))
    placed: dict[str, tuple[MediaSlot, list[int]]] = {}

    async def connect(call: RecordedCall) -> None:
        slot = workers.pool.place()
        assert slot is not None
        ports = [slot.ports.take(), slot.ports.take()]
        placed[call.name] = (slot, ports)
        bound = await slot.send_nowait("create", call=call.name, ports=ports)
        call.ports = {leg: (bound[leg][0], bound[leg][1]) for leg in ("a", "b")}
        for leg, party in (("a", call.caller), ("b", call.callee)):
            address = list(party.sock.getsockname())
            await slot.send_nowait("signal", call=call.name, leg=leg, rtp=address, nat=False)
        await slot.send_nowait("record", call=call.name, recording=str(uuid.uuid4()))

    async def delete(call: RecordedCall) -> None:
        slot, ports = placed.pop(call.name)
        await slot.send_nowait("delete", call=call.name)
        for port in ports:
            slot.ports.give_back(port)

    await asyncio.gather(*(connect(call) for call in made))
    at: list[tuple[float, float]] = []
    sent, lag = await send_in_real_time(
        made, seconds, senders, lambda: at.append((workers.cpu_seconds(), time.monotonic()))
    )
    ((cpu, started),) = at
    cpu = (workers.cpu_seconds() - cpu) / (time.monotonic() - started)
    finishing = time.monotonic()
    await asyncio.gather(*(delete(call) for call in made))
    totals = {"placed": 0, "late": 0, "other": 0}
    for _ in made:
        while (event := await asyncio.wait_for(events.get(), 120))["event"] not in (
            "recording_ready",
            "recording_failed",
        ):
            pass
        if event["event"] == "recording_failed":
            raise SystemExit(f"a recording failed: {event['error']}")
        for counters in event["recording"]["counters"].values():
            totals["placed"] += counters["placed"]
            totals["late"] += counters["late"]
            totals["other"] += sum(
                counters[k] for k in ("duplicates", "skipped", "malformed", "muted")
            )
    finishing = time.monotonic() - finishing
    for call in made:
        call.caller.sock.close()
        call.callee.sock.close()
    expected = calls * 2 * round(seconds / 0.02)
    lost = expected - totals["placed"] - totals["late"] - totals["other"]
    return {
        "late": totals["late"] / expected,
        "lost": lost / expected,
        "cpu": cpu,
        "lag": lag,
        "finishing": finishing,
        "unsent": (expected - sent) / expected,
    }


async def recording_ladder(
    root: Path, count: int, seconds: float, max_calls: int, senders: int
) -> tuple[int, float] | None:
    """The largest step of recorded calls ``count`` workers carry with no packet late or lost
    (steps doubling up to the first that fails, then halving the gap to within a tenth), and
    the workers' CPU (cores) at that step."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    workers = Workers(root / f"workers-{count}", count, events)
    await asyncio.gather(*(process.start() for process in workers.processes))
    print(f"  {count} worker(s)")
    print("  calls   late    lost   workers' CPU   bench lag   finalising all")
    best: tuple[int, float] | None = None
    failed: int | None = None
    steps = [10 * count, 25 * count, 50 * count, 100 * count]
    while steps[-1] * 2 <= max_calls:
        steps.append(steps[-1] * 2)
    try:
        while steps:
            calls = steps.pop(0)
            step = await recording_step(workers, events, calls, seconds, senders)
            print(
                f"  {calls:5}  {step['late']:6.2%}  {step['lost']:6.2%}  {step['cpu']:12.0%}"
                f"  {step['lag'] * 1000:7.0f} ms  {step['finishing']:12.1f} s"
            )
            if step["unsent"] > LATE_LIMIT or step["lag"] > 0.25:
                print("  (the senders fell behind schedule: the step does not count)")
                failed = calls if failed is None else min(failed, calls)
            elif step["late"] == 0 and step["lost"] == 0:
                best = max(best or (0, 0.0), (calls, step["cpu"]))
            else:
                failed = calls if failed is None else min(failed, calls)
            if failed is not None:
                low = best[0] if best else 0
                steps = [low + (failed - low) // 2] if failed - low > max(10, low // 10) else []
    finally:
        await asyncio.gather(*(process.stop() for process in workers.processes))
    return best


async def recording_figures(root: Path, seconds: float, max_calls: int, senders: int) -> None:
    print(
        f"(2) recorded calls, 50 packets/s per leg in real time for {seconds:.0f} s, "
        "both legs relayed and recorded; 1 worker, then 2 with the calls placed over both"
    )
    one = await recording_ladder(root, 1, seconds, max_calls, senders)
    two = await recording_ladder(root, 2, seconds, max_calls, senders)
    for label, best in (("1 worker", one), ("2 workers", two)):
        if best is None:
            print(f"  {label}: no step without late or lost packets")
            continue
        calls, cpu = best
        # What the workers would carry with each of them on a core of its own, at the CPU
        # per call measured (a projection: it assumes the cost stays linear).
        print(
            f"  {label}: {calls} calls with no packet late or lost, workers' CPU {cpu:.0%} "
            f"({cpu / calls * 100:.2f} % of a core per call: about "
            f"{calls / cpu if cpu else 0:.0f} calls per core)"
        )
    if one and two:
        print(f"  ratio 2 workers / 1 worker: {two[0] / one[0]:.2f}")


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-media-", dir="/tmp"))
    try:
        await relay_figures(root, args.calls, args.seconds)
        await recording_figures(root, args.record_seconds, args.max_calls, args.senders)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20, help="relayed calls in (1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="blast time per relay in (1)")
    parser.add_argument("--record-seconds", type=float, default=4.0, help="call length in (2)")
    parser.add_argument("--max-calls", type=int, default=1600, help="largest step in (2)")
    parser.add_argument("--senders", type=int, default=4, help="sending processes in (2)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
