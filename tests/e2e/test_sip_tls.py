"""Outbound SIP over TLS through ``callrouter serve``: a destination whose certificate does not
prove the name the call was sent to is refused before any SIP byte reaches it, and the
dialplan goes on to its next step at once (not after a timer).

The impostor is ``openssl s_server`` holding a certificate our CA really issued, for another
name: what a man in the middle with any valid certificate would present.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import world_traversable_tempdir
from tests.e2e.router_api import Router
from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import SCENARIOS, free_port, run_sipp, sipp_command
from tests.transport.certificates import Authority

FAILOVER = """
[[step]]
dial = ["{destination}"]
ring_timeout = 10

[[step]]
dial = ["{secondary_destination}"]
ring_timeout = 10
"""


@contextmanager
def impostor(cert: Path, key: Path, port: int) -> Iterator[None]:
    """``openssl s_server`` on ``port`` with this certificate, for the ``with`` block."""
    server = subprocess.Popen(
        [
            *("openssl", "s_server", "-accept", f"127.0.0.1:{port}"),
            *("-cert", str(cert), "-key", str(key), "-naccept", "4"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        # It prints ACCEPT once it listens; a bounded read, since readline ends at its exit.
        for _ in range(50):
            line = server.stdout.readline()
            if "ACCEPT" in line or not line:
                break
        assert server.poll() is None, "openssl s_server did not start"
        yield
    finally:
        server.kill()
        server.communicate()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_tls_destination_with_a_certificate_for_another_name_fails_over_at_once(
    tmp_path: Path,
) -> None:
    workdir = world_traversable_tempdir("callrouter-tls-")
    ca = Authority(workdir)
    dialplans = workdir / "dialplans"
    dialplans.mkdir()
    (dialplans / "failover.toml").write_text(FAILOVER)
    impostor_port = free_port()
    peers = ExitStack()
    peers.enter_context(impostor(*ca.issue("impostor", "impostor.test"), impostor_port))
    backup_port = free_port()
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    command = sipp_command(SCENARIOS / "pbx_answer.xml", 0, backup_dir, calls=1)
    command[1] = "-bind_local"  # a server: no remote host, listen on -p
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(backup_port)
    backup = subprocess.Popen(command, cwd=backup_dir, stdout=subprocess.PIPE, text=True)
    cert, key = ca.issue("router", "127.0.0.1")
    server = ServeProcess(
        workdir / "data",
        "--dialplans-dir",
        str(dialplans),
        "--sip-static-routes",
        f"pbx.test=tls:127.0.0.1:{impostor_port}",
        "--sip-tls-port",
        "0",
        "--sip-tls-certificate",
        str(cert),
        "--sip-tls-private-key",
        str(key),
        "--sip-tls-ca-file",
        str(ca.certificate),
    )
    try:
        server.wait_ready()
        router = Router(server)
        e164 = "+441516600001"
        backup_uri = f"sip:desk@127.0.0.1:{backup_port}"
        router.api(
            "POST",
            "/v1/numbers",
            {
                "client_id": router.client_id,
                "e164": e164,
                "destination": "sips:desk@pbx.test",
                "dialplan": "failover",
                "dialplan_params": {"secondary_destination": backup_uri},
            },
        )
        result = run_sipp("uac", router.port, tmp_path, service=e164)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        output, _ = backup.communicate(timeout=60)
        assert backup.returncode == 0, output[-2000:]

        server.wait_event("call.ended", tracking_number=e164)
        (listed,) = router.api("GET", "/v1/calls?number=" + e164.replace("+", "%2B"))["data"]
        call = router.api("GET", f"/v1/calls/{listed['id']}")
        assert call["disposition"] == "answered"
        assert [(a["destination"], a["result"], a["sip_status"]) for a in call["attempts"]] == [
            ("sips:desk@pbx.test", "error", 503),
            (backup_uri, "answered", 200),
        ]
        assert call["attempts"][0]["reason"] == (
            "TLS peer refused (its certificate does not name pbx.test)"
        )
        refused = [m for m in server.messages if "TLS peer" in m]
        assert refused == [
            f"sip: TLS peer pbx.test at 127.0.0.1:{impostor_port} refused: its certificate "
            "does not name pbx.test"
        ]
        metrics = scrape(server.wait_for(r"metrics: (\S+)").group(1))
        assert metrics[("callrouter_sip_tls_refused_total", (("reason", "name"),))] == 1
        assert metrics[("callrouter_sip_tls_refused_total", (("reason", "chain"),))] == 0
    finally:
        server.stop()
        peers.close()
        if backup.poll() is None:
            backup.kill()
            backup.communicate()
        shutil.rmtree(workdir, ignore_errors=True)
