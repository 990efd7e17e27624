"""docker/ and contrib/systemd/, checked as far as this machine can without a Docker engine
or a booted systemd: hadolint, the compose file parsed and compared with the image, and
``systemd-analyze`` on the unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from callrouter.config import SETTINGS

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
UNIT = ROOT / "contrib" / "systemd" / "callrouter.service"
ADVERTISE = {"CALLROUTER_SIP_ADVERTISE", "CALLROUTER_MEDIA_ADVERTISE"}
"""Settings the advertise work of issue 12 adds (known once both branches are merged)."""


def router() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    service: dict[str, Any] = compose["services"]["router"]
    return service


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ENV "))
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_variable_the_image_and_compose_set_is_a_setting() -> None:
    known = {spec.env_name for spec in SETTINGS.values()} | ADVERTISE
    variables = set(dockerfile_env()) | set(router()["environment"])
    ours = {name for name in variables if name.startswith("CALLROUTER_")}
    assert ours - known == set()
    assert set(router()["environment"]) >= ADVERTISE


def test_the_rtp_range_is_configured_exposed_and_published_alike() -> None:
    image_range = dockerfile_env()["CALLROUTER_MEDIA_PORTS"]
    assert router()["environment"]["CALLROUTER_MEDIA_PORTS"] == image_range
    assert f"EXPOSE 8080/tcp 5060/udp 5060/tcp {image_range}/udp" in DOCKERFILE.read_text()
    assert f"{image_range}:{image_range}/udp" in router()["ports"]
    assert {"5060:5060/udp", "5060:5060/tcp"} <= set(router()["ports"])
    # The API is for the reverse proxy on the host, not the internet.
    assert "127.0.0.1:8080:8080/tcp" in router()["ports"]


def test_volumes_mount_where_the_image_owns_the_directories() -> None:
    text = DOCKERFILE.read_text()
    owned = re.search(r"install -d -o 10001 -g 10001 -m 0700 ([^\n]+)\n\s+([^\n]+)\n", text)
    assert owned is not None
    directories = set(f"{owned.group(1)} {owned.group(2)}".split()) - {"\\"}
    env = dockerfile_env()
    assert {env["CALLROUTER_DATA_DIR"], env["CALLROUTER_RECORDINGS_DIR"]} <= directories
    mounts = {volume.split(":")[1] for volume in router()["volumes"]}
    assert {env["CALLROUTER_DATA_DIR"], env["CALLROUTER_RECORDINGS_DIR"]} <= mounts
    assert "USER 10001:10001" in text
    healthcheck = "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \\\n"
    assert healthcheck + '  CMD ["callrouter", "health"]' in text


def test_dockerignore_keeps_state_and_secrets_out_of_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") + 1 :][:1] == ["!pyproject.toml"]
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "callrouter",
        "dialplans",
        "docker/entrypoint.sh",
    }
    copied = re.findall(r"^COPY (?:--\S+ )?(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = {source for line in copied for source in line.split()}
    assert sources <= allowed


def verified_units(tmp_path: Path, edit: tuple[str, str] = ("", "")) -> str:
    """``systemd-analyze verify`` on the units in contrib/systemd/ (the service, the backup
    service and its timer), their callrouter pointed at this checkout's (verify refuses a
    command that does not exist); returns what it printed, failing on a non-zero exit."""
    callrouter = shutil.which("callrouter", path=str(Path(sys.executable).parent))
    assert callrouter is not None
    names = []
    for unit in sorted((ROOT / "contrib" / "systemd").glob("callrouter*.[st]*[er]")):
        text = unit.read_text().replace("/opt/callrouter/bin/callrouter", callrouter)
        (tmp_path / unit.name).write_text(text.replace(*edit))
        names.append(unit.name)
    assert names == ["callrouter-backup.service", "callrouter-backup.timer", "callrouter.service"]
    done = subprocess.run(
        ["systemd-analyze", "verify", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_systemd_units_verify_without_a_warning(tmp_path: Path) -> None:
    assert verified_units(tmp_path) == ""
    mistyped = verified_units(tmp_path, ("ProtectSystem=strict", "ProtectSystem=strickt"))
    assert "protect system value" in mistyped, mistyped


def test_systemd_unit_hardening(tmp_path: Path) -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert settings["User"] == "callrouter"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/callrouter"
    assert settings["AmbientCapabilities"] == settings["CapabilityBoundingSet"]
    assert settings["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert settings["PrivateTmp"] == "yes"
    assert settings["KillMode"] == "mixed"  # callrouter stops its PostgreSQL itself
    unit = tmp_path / "callrouter.service"
    unit.write_text(UNIT.read_text())
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert exposure is not None, done.stdout + done.stderr
    print(f"systemd-analyze security exposure: {exposure.group(1)} (0 best, 10 worst)")
    assert float(exposure.group(1)) < 3.0


def test_env_example_names_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker" / "compose.yaml").read_text()))
    example = (ROOT / "docker" / "env.example").read_text()
    offered = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert required == offered == {"POSTGRES_PASSWORD", "PUBLIC_IP", "CARRIERS"}
