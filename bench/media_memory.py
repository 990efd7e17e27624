"""The media worker's memory over many recorded calls: does it level off, or leak?

The worker is built as ``python -m callrouter.media.worker`` builds it (its Recordings with a
vault, its port allocator, its control socket) but in this process, so that tracemalloc sees
its Python allocations; it is driven over its real Unix control socket by a client on the same
uvloop loop. Each round places ``--calls`` recorded calls at once: create, both legs signalled
to sockets of this process, record; both parties send 20 ms PCMU packets in real time for
``--seconds``; then every call is deleted and its recording finalised (decrypt, FLAC, seal).

After each round (and a garbage collection) it prints the process's USS (private memory, from
/proc/self/smaps_rollup), the Python heap that tracemalloc traces, and the live per-call
structures (relay sessions, recorders, raw writers, asyncio tasks): these are back to zero
after every round unless something keeps finished calls. tracemalloc starts after
``--warmup`` rounds; at the end the allocation sites that grew most since the first traced
round are listed. USS growing while the traced heap stays flat is native memory (the C
allocator's heap, libsndfile), not Python objects kept alive; glibc's own figures
(mallinfo2: in use, free but kept, in mappings of their own) tell a C leak (in use grows) from
a heap that keeps what was freed (free grows).

    python3 bench/media_memory.py [--rounds 30] [--calls 40] [--seconds 2] [--warmup 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from bench.process_memory import smaps_rollup  # noqa: E402
from callrouter.media.g711 import ulaw_encode  # noqa: E402
from callrouter.media.prompt import tone  # noqa: E402
from callrouter.media.recording import Recordings, RecordingSettings  # noqa: E402
from callrouter.media.relay import PortAllocator  # noqa: E402
from callrouter.media.worker import Controllers, MediaWorker, serve_control  # noqa: E402
from callrouter.vault import Vault  # noqa: E402

PAYLOAD = ulaw_encode(tone(440.0, 0.02))  # 160 bytes: 20 ms of PCMU
HEADER = struct.Struct("!BBHII")
# Objects of one call: a live count above zero after a round is a call kept after its end.
PER_CALL = ("RelaySession", "RelayLeg", "StereoRecorder", "RecordingWriter", "_Active", "Task")


class Control:
    """A client of the worker's control socket: commands by id, events in a queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.next_id = 0
        self.reading = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            future = self.pending.pop(message.get("id", -1), None)
            if future is not None:
                future.set_result(message)
            elif "event" in message:
                self.events.put_nowait(message)

    async def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self.writer.write(json.dumps({"id": self.next_id, "cmd": cmd, **fields}).encode() + b"\n")
        reply: dict[str, Any] = await asyncio.wait_for(future, 60)
        if not reply.get("ok"):
            raise SystemExit(f"{cmd} failed: {reply.get('error')}")
        return reply


def uss_mib() -> float:
    figures = smaps_rollup(Path("/proc/self/smaps_rollup").read_text())
    return (figures["Private_Clean"] + figures["Private_Dirty"]) / 1024


class Mallinfo2(ctypes.Structure):
    """glibc's mallinfo2(3): the C heap summed over every arena."""

    _fields_: ClassVar[list[tuple[str, type[ctypes.c_size_t]]]] = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def c_heap_mib() -> tuple[float, float, float]:
    """(in use, free but kept, in mappings of their own) MiB of the C heap."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks / 2**20, info.fordblks / 2**20, info.hblkhd / 2**20


def live_objects() -> Counter[str]:
    names = Counter(type(o).__name__ for o in gc.get_objects())
    return Counter({name: names[name] for name in PER_CALL})


async def one_round(control: Control, number: int, calls: int, seconds: float) -> None:
    parties: list[tuple[str, socket.socket, socket.socket]] = []
    for n in range(calls):
        name = f"round{number}-{n}"
        caller, callee = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        for sock in (caller, callee):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read
            sock.bind(("127.0.0.1", 0))
        parties.append((name, caller, callee))
    targets: list[tuple[socket.socket, tuple[str, int], int]] = []
    for name, caller, callee in parties:
        ports = await control.command("create", call=name)
        for leg, sock in (("a", caller), ("b", callee)):
            rtp = list(sock.getsockname())
            await control.command("signal", call=name, leg=leg, rtp=rtp, nat=False)
            targets.append((sock, (ports[leg][0], ports[leg][1]), 0x10000 + len(targets)))
        await control.command("record", call=name, recording=str(uuid.uuid4()))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(round(seconds / 0.02)):
        for sock, target, ssrc in targets:
            packet = HEADER.pack(0x80, 0, index & 0xFFFF, index * 160, ssrc) + PAYLOAD
            try:
                sock.sendto(packet, target)
            except BlockingIOError:
                continue
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))
    for name, _, _ in parties:
        await control.command("delete", call=name)
    done = 0
    while done < calls:
        event = await asyncio.wait_for(control.events.get(), 120)
        if event["event"] == "recording_failed":
            raise SystemExit(f"a recording failed: {event.get('error')}")
        done += event["event"] == "recording_ready"
    for _, caller, callee in parties:
        caller.close()
        callee.close()


async def run(args: argparse.Namespace, root: Path) -> None:
    settings = RecordingSettings(
        root / "recordings", root / "vault" / "keyring.json", root / "keys"
    )
    settings.recordings_dir.mkdir(mode=0o700, parents=True)
    vault = Vault.open(settings.key_ring, settings.keys_dir)
    controllers = Controllers()
    recordings = Recordings(settings, vault, controllers.emit, controllers.connected)
    ports = PortAllocator(args.first_port, args.first_port + 4 * args.calls + 99)
    worker = MediaWorker("127.0.0.1", ports, 60.0, controllers, recordings)
    stop = asyncio.Event()
    path = root / "control.sock"
    serving = asyncio.create_task(serve_control(worker, path, stop))
    for _ in range(1000):  # ten seconds at most for the socket to appear
        if path.exists():
            break
        await asyncio.sleep(0.01)
    else:
        raise SystemExit("the worker's control socket never appeared")
    control = Control(*await asyncio.open_unix_connection(str(path), limit=1 << 24))
    print(f"{args.calls} recorded calls a round, {args.seconds:g} s of RTP each way")
    print(
        "round  calls  USS MiB  traced MiB  C used  C free  C mmap  sessions  recordings  ports  "
        "live per-call objects"
    )
    first: tracemalloc.Snapshot | None = None
    try:
        for number in range(1, args.rounds + 1):
            if number == args.warmup + 1:
                tracemalloc.start(args.frames)
            await one_round(control, number, args.calls, args.seconds)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else 0
            if number == args.warmup + 1:
                first = tracemalloc.take_snapshot()
            live = live_objects()
            print(
                f"{number:5d}  {number * args.calls:5d}  {uss_mib():7.1f}  {traced:10.2f}  "
                + "".join(f"{mib:6.1f}  " for mib in c_heap_mib())
                + f"{len(worker.sessions):8d}  {len(recordings):10d}  {ports.in_use:5d}  "
                + " ".join(f"{k}={v}" for k, v in live.items()),
                flush=True,
            )
        if first is not None:
            last = tracemalloc.take_snapshot()
            noise = (tracemalloc.Filter(False, tracemalloc.__file__),)
            print(f"\nallocation sites that grew most from round {args.warmup + 1} to the end:")
            top = last.filter_traces(noise).compare_to(first.filter_traces(noise), "lineno")
            for stat in top[: args.top]:
                print(f"  {stat}")
    finally:
        stop.set()
        control.writer.close()
        await serving
        control.reading.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=40, help="recorded calls a round")
    parser.add_argument("--seconds", type=float, default=2.0, help="RTP per call")
    parser.add_argument("--warmup", type=int, default=3, help="rounds before tracemalloc starts")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per site")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--first-port", type=int, default=26000, help="the worker's RTP range starts here"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-media-memory-", dir="/tmp"))
    print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    try:
        uvloop.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
