"""Password hashing: argon2id with RFC 9106's second recommended option (t=3, p=4, 64 MiB).

Hashing costs tens of milliseconds of CPU and 64 MiB, so it runs in a thread, off the event
loop. A login for an email nobody has verifies against a dummy hash, so the answer takes the
same work whether or not the account exists.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

CONCURRENT = 2
"""Hashes computed at once; more wait their turn. Each takes 64 MiB and a core for a good part
of a second, so a burst of logins from many addresses queues instead of taking every core and
the memory from the calls."""
MIN_LENGTH = 10
MAX_LENGTH = 1024
"""Longer inputs are refused before hashing (a megabyte password is a denial of service)."""


class WeakPassword(ValueError):
    """A new password does not meet the policy; the message says why, for the form."""


def check_policy(password: str, *, email: str = "") -> None:
    """:raises WeakPassword: too short, too long, or the email itself."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"must be at most {MAX_LENGTH} characters")
    if email and password.strip().lower() == email.lower():
        raise WeakPassword("must not be your email address")


class Passwords:
    """Hash and verify passwords in threads."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)
        self._dummy: str | None = None
        self._turns = asyncio.Semaphore(CONCURRENT)

    async def hash(self, password: str) -> str:
        async with self._turns:
            return await asyncio.to_thread(self._hasher.hash, password)

    def hash_now(self, password: str) -> str:
        """For the command line, which has nothing else to do meanwhile."""
        return self._hasher.hash(password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash (unknown email, no
        password set yet) a dummy is verified instead, and the answer is False."""
        if len(password) > MAX_LENGTH:
            password = password[:MAX_LENGTH]
        if self._dummy is None:
            self._dummy = await self.hash("not a password of anyone")
        target = stored if stored is not None else self._dummy
        async with self._turns:
            matched = await asyncio.to_thread(self._matches, target, password)
        return matched and stored is not None

    def _matches(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
