"""contrib/kamailio: Debian's Kamailio accepts the dispatcher configuration shipped for a
cluster of nodes (and would refuse a broken one: the check is not a formality)."""

from __future__ import annotations

import subprocess
from pathlib import Path

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "kamailio"


def check(config: Path, *defines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "kamailio", "-c", "-f", str(config),
            "-A", f'DS_LIST="{CONTRIB / "dispatcher.list"}"', *defines,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip


def test_kamailio_accepts_the_dispatcher_config_as_shipped_and_as_templated() -> None:
    shipped = check(CONTRIB / "dispatcher.cfg")
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    assert "config file ok" in shipped.stdout + shipped.stderr
    # The form the cluster test and bench run it in: their own address and timers.
    templated = check(
        CONTRIB / "dispatcher.cfg",
        "-A", "LISTEN=udp:127.0.0.1:5999", "-A", "DS_PING_INTERVAL=1",
        "-A", "DS_PROBE_THRESHOLD=1", "-A", "FR_TIMER=1000",
    )  # fmt: skip
    assert templated.returncode == 0, templated.stderr[-3000:]
    assert "127.0.0.1 [127.0.0.1]:5999" in templated.stdout + templated.stderr


def test_the_check_refuses_a_config_with_an_unknown_function(tmp_path: Path) -> None:
    broken = tmp_path / "dispatcher.cfg"
    text = (CONTRIB / "dispatcher.cfg").read_text()
    broken.write_text(text.replace("ds_next_dst()", "ds_next_destination()", 1))
    result = check(broken)
    assert result.returncode != 0
    assert "unknown command" in result.stderr


def test_every_node_in_the_shipped_list_is_in_the_set_the_config_dispatches_to() -> None:
    entries = [
        line.split()
        for line in (CONTRIB / "dispatcher.list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(entries) >= 2
    assert {entry[0] for entry in entries} == {"1"}
    assert 'ds_select_dst("1", "4")' in (CONTRIB / "dispatcher.cfg").read_text()
