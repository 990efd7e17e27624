"""Several ``callrouter serve`` nodes on one PostgreSQL with Kamailio's dispatcher in front
(contrib/kamailio, templated with this run's ports): for the cluster test and bench/cluster.py.

Nodes listen on 127.0.0.1 with ports of their own (SIP, HTTP, RTP range); PostgreSQL is a
server this module starts under the work directory, reached by every node with
``--database-url`` as an external one would be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from callrouter.store.database import ensure_database
from callrouter.store.embedded import DATABASE, EmbeddedPostgres
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import free_port
from tests.e2e.test_faults import descendants, listen_port, until

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "kamailio"
NUMBER = "+441515550001"


def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dsn)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    return asyncio.run(fetch())


@dataclass(eq=False)
class Node:
    """One ``serve`` of the cluster."""

    name: str
    server: ServeProcess
    sip_port: int

    @property
    def pids(self) -> list[int]:
        """serve and every process under it (its media worker)."""
        return [self.server.process.pid, *descendants(self.server.process.pid)]

    def kill(self) -> None:
        """SIGKILL the node and everything under it at once, as a dead host would stop."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # a short-lived child gone since it was listed
        self.server.kill()


@dataclass(eq=False)
class Database:
    """A PostgreSQL of its own under ``root``, with an empty callrouter database."""

    root: Path
    server: EmbeddedPostgres = field(init=False)

    def __post_init__(self) -> None:
        self.server = EmbeddedPostgres(self.root / "postgres")
        self.server.start()
        asyncio.run(ensure_database(self.server.admin_dsn, DATABASE))

    @property
    def dsn(self) -> str:
        return self.server.dsn

    def stop(self) -> None:
        self.server.stop()


def start_nodes(workdir: Path, dsn: str, names: list[str], *extra: str) -> list[Node]:
    """Start every node at once (so their migrations race, as in a rolling deploy gone
    wrong), then wait until each is ready."""
    ports: list[int] = []
    while len(ports) < len(names):
        # Free now, but not bound before the nodes start: never the same one twice.
        if (port := listen_port()) not in ports:
            ports.append(port)
    starting = []
    for index, (name, port) in enumerate(zip(names, ports, strict=True)):
        first_rtp = 40000 + 2000 * index  # a range of its own: the nodes share one address
        server = ServeProcess(
            workdir / name,
            "--database-url", dsn,
            "--cluster-node", name,
            "--sip-port", str(port),
            "--media-ports", f"{first_rtp}-{first_rtp + 1999}",
            # Every call comes from the dispatcher's one address.
            "--sip-rate-per-second", "1000",
            "--sip-rate-burst", "5000",
            *extra,
        )  # fmt: skip
        starting.append(Node(name, server, port))
    for node in starting:
        node.server.wait_ready()
    return starting


@dataclass(eq=False)
class Dispatcher:
    """Kamailio with contrib/kamailio/dispatcher.cfg in front of ``nodes``, probing each every
    second and failing over after one second of silence."""

    workdir: Path
    nodes: list[Node]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] = field(init=False)

    def __post_init__(self) -> None:
        run = self.workdir / "kamailio"
        run.mkdir(exist_ok=True)
        listing = run / "dispatcher.list"
        listing.write_text(
            "".join(
                f"1 sip:127.0.0.1:{node.sip_port};transport=udp 0 0 duid={node.name}\n"
                for node in self.nodes
            )
        )
        self.log = run / "kamailio.log"
        self._output = self.log.open("w")
        self.process = subprocess.Popen(
            [
                "kamailio", "-DD", "-E", "-n", "2", "-f", str(CONTRIB / "dispatcher.cfg"),
                "-A", f"LISTEN=udp:127.0.0.1:{self.port}",
                "-A", f'DS_LIST="{listing}"',
                "-A", "DS_PING_INTERVAL=1", "-A", "DS_PROBE_THRESHOLD=1",
                "-A", "FR_TIMER=1000",
                "-P", str(run / "kamailio.pid"), "-Y", str(run), "-w", str(run),
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        until(self._answers, 30, "Kamailio to answer OPTIONS")

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(0.2)
            local = udp.getsockname()[1]
            udp.sendto(
                (
                    f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
                    f"From: <sip:test@127.0.0.1>;tag=t{os.urandom(4).hex()}\r\n"
                    f"To: <sip:127.0.0.1:{self.port}>\r\n"
                    f"Call-ID: {os.urandom(8).hex()}@test\r\nCSeq: 1 OPTIONS\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", self.port),
            )
            try:
                return udp.recv(4096).startswith(b"SIP/2.0 200")
            except TimeoutError:
                return False

    def saw(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()
