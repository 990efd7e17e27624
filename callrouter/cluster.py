"""This node among several on one PostgreSQL: its name, its heartbeat, and its once-only duties.

Rules of this file:

- The node holds one dedicated database connection for as long as it runs. On it the node
  takes its name's advisory lock (a second live node of the same name is refused), writes its
  heartbeat, and takes the lock of each duty it does. PostgreSQL releases every one of those
  locks when the session ends, which is how a dead node's duties move: the others try each
  duty's lock every beat, and the first to get it starts the duty.
- A node that loses the connection stops its duties at once (it can no longer know it is the
  only one doing them), connects again, takes its name again and competes for duties afresh.
- The server notices a vanished peer (a host that died, not a killed process, whose kernel
  closes the socket) through TCP keepalives, asked for here so the locks go within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

import asyncpg

from callrouter.config import ConfigError
from callrouter.store import nodes
from callrouter.store.availability import OUTAGE_ERRORS
from callrouter.supervisor import Job, Supervisor

__all__ = ["ClusterNode", "Duty", "node_name"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
"""The server gives up on a silent node's session (and its locks) after about 11 s."""


class Duty(IntEnum):
    """Background work that must run on one node at a time; the value keys its lock."""

    CLOSE_LOST_CALLS = 1
    """Close the open calls of nodes that are gone."""
    RETENTION_PURGE = 2
    WEBHOOK_DELIVERIES = 3
    """Send due webhook deliveries and their retries."""
    RECORDING_DISPOSALS = 4
    """Shred the key and file of each deleted recording."""

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


def node_name(configured: str) -> str:
    """The node's name: ``[cluster] node``, or the host name; refused when not a plain name."""
    name = configured or socket.gethostname()
    if not _NAME.fullmatch(name):
        where = "cluster.node" if configured else f"cluster.node (the host name {name!r})"
        raise ConfigError(
            f"{where}: a node name is 1-63 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    return name


@dataclass(eq=False)
class ClusterNode:
    """:param dsn: the shared database.
    :param name: this node's name (see ``node_name``).
    :param say: where facts for the operator go.
    :param beat_every: seconds between heartbeats (and between tries for free duties).
    :param backoff: seconds before the n-th consecutive reconnection attempt (n from 1).
    """

    dsn: str
    name: str
    say: Callable[[str], None]
    beat_every: float = 1.0
    backoff: Callable[[int], float] = lambda n: min(5.0, 0.25 * 2**n)
    held: dict[Duty, Supervisor] = field(default_factory=dict)
    """The duties this node does now, each run (and restarted when it fails) by its own
    supervisor."""
    beats: int = 0
    """Heartbeats written (each followed by a try for every free duty) since start."""
    _duties: dict[Duty, Job] = field(default_factory=dict)
    _connection: asyncpg.Connection[asyncpg.Record] | None = None
    _id: int = 0

    async def join(self) -> datetime:
        """Connect and take this node's name; the name's last heartbeat before now (when a
        previous run of this node was last alive, or the name's registration).

        :raises ConfigError: another live node has this name.
        """
        connection = await self._connect()
        taken = await nodes.claim(connection, self.name)
        if isinstance(taken, nodes.Holder):
            await connection.close()
            raise ConfigError(
                f"cluster.node: a live node is already named {self.name!r} on this database "
                f"(started {taken.started_at:%Y-%m-%d %H:%M:%S %Z}, last heartbeat "
                f"{taken.heartbeat_at:%H:%M:%S}): give each node its own name ([cluster] node, "
                "CALLROUTER_CLUSTER_NODE or --cluster-node)"
            )
        self._connection, self._id = connection, taken.id
        return taken.last_heartbeat

    def duty(self, duty: Duty, job: Job) -> None:
        """Do ``job`` while this node holds ``duty`` (call before ``run``)."""
        self._duties[duty] = job

    async def run(self) -> None:
        """Beat and compete for free duties every ``beat_every`` seconds, until cancelled;
        after a lost connection, stop the duties and join again."""
        while True:
            try:
                await self._beat()
            except OUTAGE_ERRORS as exc:
                await self._lost(exc)
            await asyncio.sleep(self.beat_every)

    async def leave(self) -> None:
        """Stop the duties, then close the connection (releasing the name and the duties)."""
        await self._drop_duties()
        if self._connection is not None:
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self._connection.close(timeout=5)
            self._connection = None

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        connection: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            self.dsn, timeout=10, command_timeout=10, server_settings=KEEPALIVES
        )
        return connection

    async def _beat(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed():
            raise ConnectionError("the node's database session is closed")
        await nodes.beat(connection, self._id)
        for duty, job in self._duties.items():
            if duty not in self.held and await nodes.take_duty(connection, duty):
                supervisor = Supervisor()
                supervisor.start(f"duty {duty.label}", job)
                self.held[duty] = supervisor
                self.say(f"cluster: node {self.name} does duty {duty.label}")
        self.beats += 1

    async def _lost(self, exc: Exception) -> None:
        if self.held:
            self.say(
                f"cluster: node {self.name} lost its database session ({type(exc).__name__}): "
                f"stopped {len(self.held)} duty(ies) until it is back"
            )
        await self._drop_duties()
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None
        failures = 0
        while self._connection is None:
            failures += 1
            await asyncio.sleep(self.backoff(failures))
            try:
                connection = await self._connect()
            except OUTAGE_ERRORS:
                continue
            try:
                taken = await nodes.claim(connection, self.name)
            except OUTAGE_ERRORS:
                connection.terminate()
                continue
            if isinstance(taken, nodes.Holder):
                # Our old session may linger on the server until its keepalives give up.
                if failures == 1 or failures % 20 == 0:
                    log.error("cluster: the name %s is still held; trying again", self.name)
                await connection.close()
                continue
            self._connection, self._id = connection, taken.id
            self.say(f"cluster: node {self.name} is back on the database")

    async def _drop_duties(self) -> None:
        held, self.held = self.held, {}
        for supervisor in held.values():
            await supervisor.stop()
