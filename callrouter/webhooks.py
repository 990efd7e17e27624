"""Webhook delivery: signed JSON POSTs to clients' endpoints, retried with backoff for hours.

Each delivery is a row first (``store.webhooks``), so nothing is lost to a restart; the sender
takes due rows, POSTs them and records the outcome. A call's events (call.started,
call.answered, call.completed) are not stored here: ``raised`` makes them call events that the
call journal spools to disk and stores with the call's rows, so a kill while the database is
away loses none. The signature header is
``Callrouter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``;
a receiver recomputes it and rejects old timestamps (see the README's recipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import aiohttp

from callrouter.call_events import WebhookRaised
from callrouter.public_addresses import PublicOnlyResolver, check_literal
from callrouter.store import webhooks as store
from callrouter.store.availability import OUTAGE_ERRORS
from callrouter.store.database import Executor
from callrouter.store.ids import new_id
from callrouter.store.webhooks import event_body

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Callrouter-Signature"
MAX_ATTEMPTS = 15  # 30 s doubling to an hour apart: about 9 hours of trying


class Listener(Protocol):
    """The part of ``store.notifications.Notifications`` the sender listens with."""

    async def add_listener(self, channel: str, callback: Callable[..., None], /) -> None: ...

    def on_lost(self, callback: Callable[[], None]) -> None: ...

    def on_listening(self, callback: Callable[[], Awaitable[None]]) -> None: ...


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def backoff(attempts: int, base: float = 30.0) -> float | None:
    """Seconds until the next try after ``attempts`` failures; None: give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return float(min(3600.0, base * 2.0 ** (attempts - 1)))


@dataclass(eq=False)
class WebhookSender:
    """Queues events for clients' webhooks and sends what is due.

    :param allow_private: allow endpoints on loopback or private networks (tests, labs);
        off by default so a client cannot make the server call its own internal services.
    """

    db: Executor
    allow_private: bool = False
    clock: Callable[[], float] = time.time
    timeout: float = 10.0
    retry_base: float = 30.0
    """Seconds before the first retry; each later one waits twice as long (at most an hour)."""
    attempts_made: int = 0
    """Attempts recorded since start (a metric; ``recorded`` waits on it)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Attempts since start by outcome: delivered, failed (will retry), gave_up (metrics)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _wanted: dict[UUID, frozenset[str]] | None = None
    """The events each client's webhooks want, while ``watch`` keeps it true; None: not
    known (not watched, a change not read yet, the LISTEN connection lost), so every event is
    looked up in the database as if it were wanted."""
    _generation: int = 0
    """Bumped by every change heard of: a read begun before it is stale and is dropped."""
    _reads: set[asyncio.Task[None]] = field(default_factory=set)
    reloads: int = 0
    """Reads of the wanted events kept since start (``reloaded`` waits on it)."""

    async def watch(self, listener: Listener) -> None:
        """Keep which events each client's webhooks want in memory, so that ``raised``
        drops an event nobody wants without a query (a call raises three; most clients have
        no webhook). Every change is NOTIFYed (migration 0017); while nobody listens every
        event is taken as wanted (the database decides when it is stored), and the table is
        read again once it listens."""
        await listener.add_listener(store.CHANGED_CHANNEL, self._changed)
        listener.on_lost(self._forget)
        listener.on_listening(self._read_wanted)
        await self._read_wanted_logged()

    def _may_want(self, client_id: UUID, event: str) -> bool:
        return self._wanted is None or event in self._wanted.get(client_id, ())

    def _forget(self) -> None:
        self._generation += 1
        self._wanted = None

    def _changed(self, *_notification: object) -> None:
        self._forget()
        task = asyncio.get_running_loop().create_task(self._read_wanted_logged())
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_wanted_logged(self) -> None:
        try:
            await self._read_wanted()
        except OUTAGE_ERRORS as exc:
            log.warning("webhooks: could not read the webhooks table (%s); events looked up", exc)

    async def _read_wanted(self) -> None:
        generation = self._generation
        wanted = await store.wanted_events(self.db)
        if generation == self._generation:
            self._wanted = wanted
        async with self._progress:
            self.reloads += 1
            self._progress.notify_all()

    async def reloaded(self, reads: int) -> None:
        """Wait until the wanted events have been read ``reads`` times in total."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.reloads >= reads)

    async def emit(self, client_id: UUID, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every webhook of the client that wants it (none: dropped
        without a query once ``watch`` knows)."""
        await self.emit_in(self.db, client_id, event, data)

    async def emit_in(
        self,
        db: Executor,
        client_id: UUID,
        event: str,
        data: dict[str, Any],
        event_id: UUID | None = None,
    ) -> None:
        """``emit`` on the caller's connection, inside its transaction: the event is stored
        if and only if what it reports is. ``event_id`` keeps a repeated try to one delivery."""
        if not self._may_want(client_id, event):
            return
        if await store.enqueue(db, client_id, event, event_body(event, data), event_id=event_id):
            self._wake.set()

    async def emit_to(self, hook: store.Webhook, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for one webhook, whatever events it asked for."""
        await store.enqueue_one(self.db, hook, event, event_body(event, data))
        self._wake.set()

    def raised(
        self,
        call_id: UUID,
        client_id: UUID,
        event: str,
        data: dict[str, Any],
        *,
        at: datetime,
        event_id: UUID | None = None,
    ) -> WebhookRaised | None:
        """A call's event for the call journal, which stores it with the call's rows (and
        spools it to disk with them while the database is away); None when no webhook of the
        client wants it (known without a query once ``watch`` knows).

        :param event_id: names the event for good (default: a new id); the call's id for
            call.completed, as the closer of a lost node's calls uses, so a call ends once.
        """
        if not self._may_want(client_id, event):
            return None
        return WebhookRaised(
            call_id, client_id, event_id or new_id(), event, event_body(event, data, at), at
        )

    def wake(self) -> None:
        """Deliveries were queued elsewhere (the call journal): look for due ones now."""
        self._wake.set()

    async def run(self) -> None:
        """Send due deliveries until cancelled; wakes on new events, polls every second."""
        resolver = None if self.allow_private else PublicOnlyResolver()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "callrouter-webhooks"},
        ) as http:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                self._wake.clear()
                try:
                    batch = await store.due(self.db, 50)
                except OUTAGE_ERRORS:
                    continue  # the database is away (said once, by its watcher): wait for it
                except Exception:
                    log.exception("webhooks: cannot read the queue")
                    continue
                await asyncio.gather(*(self._send(http, *item) for item in batch))

    async def _send(
        self, http: aiohttp.ClientSession, delivery: store.Delivery, url: str, secret: str
    ) -> None:
        body = json.dumps({"id": str(delivery.id), **delivery.payload}).encode()
        status: int | None = None
        error: str | None = None
        try:
            if not self.allow_private:
                check_literal(url)
            timestamp = int(self.clock())
            async with http.post(
                url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(secret, timestamp, body),
                    "Callrouter-Event": delivery.event,
                    "Callrouter-Delivery": str(delivery.id),
                },
                allow_redirects=False,
            ) as response:
                status = response.status
                if not 200 <= status < 300:
                    error = f"answered {status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
        retry = None if error is None else backoff(delivery.attempts + 1, self.retry_base)
        await store.record_attempt(self.db, delivery.id, status=status, error=error, retry_in=retry)
        self.outcomes["delivered" if error is None else "failed" if retry else "gave_up"] += 1
        async with self._progress:
            self.attempts_made += 1
            self._progress.notify_all()

    async def recorded(self, attempts: int) -> None:
        """Wait until ``attempts`` delivery attempts have been recorded in total."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.attempts_made >= attempts)
