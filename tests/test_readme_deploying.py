"""The README's "Deploying" section says only what the tests run: every command in its ``sh``
blocks parses and is run by a named test, and its nginx block is the file the proxy test
runs. (Commands that need Docker or a booted systemd are in ``text`` blocks, marked not run.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from callrouter.cli import _parser

ROOT = Path(__file__).parents[1]
TESTS = ROOT / "tests"
RUN_BY = {
    "callrouter": {
        "keys": TESTS / "e2e" / "test_deploy_cli.py",
        "health": TESTS / "e2e" / "test_container_entrypoint.py",
        "backup": TESTS / "e2e" / "test_backup.py",
        "restore": TESTS / "e2e" / "test_backup.py",
    },
    "hadolint": {"docker/Dockerfile": TESTS / "test_deploy_files.py"},
    "systemd-analyze": {
        "verify": TESTS / "test_deploy_files.py",
        "security": TESTS / "test_deploy_files.py",
    },
}
"""Program -> first argument -> the test file that runs it."""


def deploying() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Deploying\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", deploying(), re.MULTILINE | re.DOTALL)


def test_every_shell_command_in_deploying_parses_and_a_test_runs_it() -> None:
    commands = [
        line
        for block in blocks("sh")
        for line in block.splitlines()
        if line.strip() and not re.match(r"^\w+=", line)
    ]
    assert len(commands) >= 8
    for line in commands:
        argv = shlex.split(line, comments=True)
        program, first = argv[0], argv[1]
        assert program in RUN_BY and first in RUN_BY[program], f"no test runs: {line}"
        source = RUN_BY[program][first].read_text()
        words = [a for a in argv[1:] if a.startswith("-") or re.fullmatch(r"[a-z-]+", a)]
        if program == "callrouter":
            _parser().parse_args(argv[1:])  # exits (fails the test) on a wrong command
            missing = [w for w in words if f'"{w}"' not in source]
        else:
            missing = [w for w in words if w not in source]
        assert missing == [], f"{RUN_BY[program][first].name} never runs {missing} of: {line}"


def test_the_nginx_block_is_the_file_the_proxy_test_runs() -> None:
    (block,) = blocks("nginx")
    assert block == (ROOT / "contrib" / "nginx" / "callrouter.conf").read_text()
