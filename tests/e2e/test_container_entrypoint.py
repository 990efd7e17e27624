"""docker/entrypoint.sh run directly (no Docker engine here): it refuses a volume the runtime
user does not own, naming it and the fix, and otherwise becomes ``callrouter``, whose
``health`` command (the image's HEALTHCHECK) finds serve on the configured port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.sipp import free_port

ENTRYPOINT = Path(__file__).parents[2] / "docker" / "entrypoint.sh"
NOBODY = 65534


def entrypoint(
    *args: str, env: dict[str, str], as_user: int | None = None
) -> subprocess.CompletedProcess[str]:
    prefix = (
        []
        if as_user is None
        else ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups"]
    )
    return subprocess.run(
        [*prefix, "sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            **env,
        },
    )


def test_entrypoint_refuses_a_volume_owned_by_someone_else(workdir: Path) -> None:
    if os.geteuid() != 0:
        raise AssertionError("needs root to play the container's unprivileged user (CI is root)")
    state = workdir / "state"
    state.mkdir()  # owned by root, as a bind mount made by root on the host would be
    done = entrypoint("serve", env={"CALLROUTER_DATA_DIR": str(state)}, as_user=NOBODY)
    assert done.returncode == 1
    assert f"{state} is owned by uid 0, but callrouter runs as uid {NOBODY}" in done.stderr
    assert f"chown -R {NOBODY}:{NOBODY}" in done.stderr
    assert list(state.iterdir()) == []


def test_entrypoint_runs_serve_and_health_checks_the_configured_port(workdir: Path) -> None:
    # As the invoking user: the test's Python may sit where an unprivileged user cannot reach
    # it (a pyenv under /root), so the image's uid 10001 is not played here.
    port = free_port()
    env = {
        "CALLROUTER_HTTP_HOST": "0.0.0.0",
        "CALLROUTER_HTTP_PORT": str(port),
        "CALLROUTER_SIP_PORT": "0",
        "CALLROUTER_DATA_DIR": str(workdir / "state"),
        "CALLROUTER_RECORDINGS_DIR": str(workdir / "recordings"),
        "CALLROUTER_MEDIA_WORKERS": "0",
    }
    down = entrypoint("health", env=env)
    assert down.returncode == 1
    assert f"http://127.0.0.1:{port}/v1/health" in down.stderr

    log = (workdir / "serve.log").open("wb")
    server = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "serve"],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env},
    )
    try:
        deadline = time.monotonic() + 90
        while (up := entrypoint("health", env=env)).returncode != 0:
            assert server.poll() is None, (workdir / "serve.log").read_text()
            assert time.monotonic() < deadline, up.stderr
            time.sleep(0.2)
        assert f"http://127.0.0.1:{port}/v1/health: ok" in up.stdout
        broken = entrypoint("health", env={**env, "CALLROUTER_HTTP_PORT": "0"})
        assert broken.returncode == 2, broken.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert server.returncode == 0, (workdir / "serve.log").read_text()
