"""The server secret that keys subject hashes: one small file, created on first use, ours alone.

Phone numbers are few enough to enumerate, so a plain hash of one is no protection: anybody
could hash every number and compare. The suppression list and the request register therefore
store HMAC-SHA256 keyed with this secret. Whoever holds the database but not the secret learns
nothing; whoever loses the secret can no longer recognise a suppressed number, so it must be
backed up with the database (it is 64 hex characters).
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from callrouter.config import Config

SECRET_BYTES = 32


class SecretFileError(Exception):
    """The secret file cannot be used; the message names the file and what to do."""


@dataclass(frozen=True, repr=False)
class ServerSecret:
    """The secret's bytes, and whether this start created the file (a key operation to audit)."""

    value: bytes
    path: Path
    created: bool

    def __repr__(self) -> str:
        # Never print the secret, even in a traceback's locals.
        return f"ServerSecret(path={self.path!s}, created={self.created})"


def secret_path(config: Config) -> Path:
    """Where the secret lives: ``[privacy] secret_file``, else ``<data_dir>/privacy/secret``."""
    return config.privacy.secret_file or config.data_dir / "privacy" / "secret"


def load_secret(path: Path) -> ServerSecret:
    """Read the secret, creating it (mode 0600, directory 0700) when the file does not exist.

    Blocking file I/O: call it before the event loop starts or in a thread.

    :raises SecretFileError: when group or others have any permission on the file, or its
        content is not at least 32 bytes of hex.
    """
    created = False
    if not path.exists():
        created = _create(path)
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"{path}: cannot read the privacy secret: {exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"{path}: the privacy secret must be private to this account "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise SecretFileError(f"{path}: the privacy secret is not hex text") from None
    if len(value) < SECRET_BYTES:
        raise SecretFileError(
            f"{path}: the privacy secret is {len(value)} bytes; at least {SECRET_BYTES} needed"
        )
    return ServerSecret(value, path, created)


def _create(path: Path) -> bool:
    """Write a new random secret; False when another process created it first.

    The secret is written to a private temporary file and linked into place, so nobody ever
    reads a half-written secret, and two processes starting at once cannot each keep their own.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot create the privacy secret: {exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return True
