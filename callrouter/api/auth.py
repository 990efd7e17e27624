"""API key authentication with a short cache, per-key rate limits and brute-force damping.

Keys are looked up by their SHA-256; the principal is cached briefly so a busy client does not
cost a query per request. Revocation reaches every server process at once through PostgreSQL
LISTEN/NOTIFY (``api_keys.REVOKED_CHANNEL``), so the cache never outlives a revoked key.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from uuid import UUID

import asyncpg
from aiohttp import web

from callrouter.api.problems import FieldError, Problem
from callrouter.ratelimit import TokenBuckets
from callrouter.store import api_keys
from callrouter.store.api_keys import Principal

log = logging.getLogger(__name__)

KEY_ID = web.RequestKey("key_id", UUID)
"""The id of the key a request authenticated with (for the access log)."""


class Authenticator:
    """Turns an ``Authorization: Bearer`` header into a Principal, or a 401/429 problem."""

    def __init__(
        self,
        db: asyncpg.Pool[asyncpg.Record],
        per_key: TokenBuckets,
        failures: TokenBuckets,
        *,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._per_key = per_key
        self._failures = failures
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(self, request: web.Request) -> Principal:
        now = self._clock()
        source = request.remote or "unknown"
        header = request.headers.get("Authorization", "")
        if not header.isascii():
            # aiohttp keeps undecodable header bytes as surrogates, which no key can contain.
            raise Problem(
                400,
                "Authorization: must be ASCII",
                [FieldError("Authorization", "must be ASCII (Bearer crk_...)")],
            )
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            _refused(source, "no bearer key")
            raise self._unauthorized("send the API key as Authorization: Bearer <key>")
        secret = secret.strip()
        digest = api_keys.hash_secret(secret)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            self._refuse_if_flooding(source, now)
            found = await api_keys.authenticate(self._db, secret)
            if found is None:
                self._failures.take(source, now)
                _refused(source, "unknown or revoked key")
                raise self._unauthorized("unknown or revoked API key")
            principal = found
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, now + self._cache_seconds)
        request[KEY_ID] = principal.key_id
        wait = self._per_key.take(principal.key_id, now)
        if wait > 0:
            raise Problem(
                429,
                "rate limit exceeded for this API key",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        return principal

    def _refuse_if_flooding(self, source: str, now: float) -> None:
        """Too many bad keys from one address: answer 429 before touching the database."""
        if self._failures.available(source, now) < 1:
            _refused(source, "too many failures")
            raise Problem(429, "too many failed authentications from this address")

    @staticmethod
    def _unauthorized(detail: str) -> Problem:
        return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="callrouter"'})

    def forget(self, key_id: UUID) -> None:
        """Drop a revoked key from the cache."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]

    def forget_client(self, client_id: UUID) -> None:
        """Drop every cached key of a deleted client (its keys went with it)."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.client_id == client_id:
                del self._cache[digest]

    def on_revoked(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        """LISTEN callback: another process (or this one) revoked a key. Logged here, so a
        revocation by ``callrouter keys revoke`` or another server is in this server's log."""
        try:
            key_id = UUID(str(payload))
        except ValueError:
            self._cache.clear()
            return
        self.forget(key_id)
        log.info(
            "auth: key %s is revoked; refused from now on",
            key_id,
            extra={"event": "key.refused_from_now", "key_id": str(key_id)},
        )


def _refused(source: str, why: str) -> None:
    """A failed authentication: the address (for a ban list), never the key presented."""
    log.warning(
        "auth: refused a request from %s: %s",
        source,
        why,
        extra={"event": "auth.failed", "remote": source, "reason": why},
    )


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
