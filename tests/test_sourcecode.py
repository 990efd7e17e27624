"""Linters run as tests, so the README test command is the only gate."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff() -> None:
    result = run("ruff", "check", "callrouter", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", "callrouter", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


#: The call controller: sans-IO like callrouter/sip/, fed events by routing/b2bua.py.
CONTROLLER_MODULES = (
    "actions",
    "call",
    "call_lifecycle",
    "call_media",
    "call_states",
    "controller",
    "events",
    "forking",
    "in_dialog",
    "keepalives",
    "outbound",
    "session_timers",
)

#: What the controller may import of callrouter: the SIP core, the call events it records, and
#: data (dialplan steps, trunks, numbers), never a module that does I/O.
CONTROLLER_IMPORTS = (
    "sip",
    "call_events",
    "store.ids",
    "store.numbers",
    "routing.dialplan",
    "routing.trunks",
    *(f"routing.{name}" for name in CONTROLLER_MODULES),
)


def sans_io_files() -> list[Path]:
    routing = ROOT / "callrouter" / "routing"
    return [
        *(ROOT / "callrouter" / "sip").rglob("*.py"),
        *(routing / f"{name}.py" for name in CONTROLLER_MODULES),
    ]


def test_sans_io_core_imports_no_io() -> None:
    """callrouter/sip/ and the call controller must stay pure: no sockets, event loops, Twisted
    or clock reads."""
    forbidden = (
        "import asyncio",
        "import socket",
        "twisted",
        "import time",
        "from time",
        "datetime.now",
        "date.today",
        "import select",
        "import threading",
    )
    offenders = []
    for path in sans_io_files():
        text = path.read_text()
        offenders += [f"{path.name}: {word}" for word in forbidden if word in text]
    assert offenders == []


def test_the_call_controller_imports_no_io_module() -> None:
    offenders = []
    for name in CONTROLLER_MODULES:
        path = ROOT / "callrouter" / "routing" / f"{name}.py"
        for target in sorted(imported_names(path)):
            if not any(within(target, allowed) for allowed in CONTROLLER_IMPORTS):
                offenders.append(f"routing.{name} imports {target}")
    assert offenders == []


#: Who may not import whom. Each rule names a package (or module) of callrouter, the parts of
#: callrouter it must not import, and why. Imports inside the package itself are always fine.
LAYER_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("call_events", ("",), "a leaf: store writes the events routing reports"),
    ("sip", ("",), "the sans-IO SIP core stands alone"),
    (
        "transport",
        ("routing", "api", "store", "privacy", "media", "webhooks"),
        "adapters carry SIP; they know nothing of calls",
    ),
    (
        "store",
        ("routing", "api", "privacy", "media", "webhooks", "sip", "transport"),
        "SQL sits under everything that uses it",
    ),
    ("routing", ("api",), "the API drives routing, never the other way"),
    (
        "media",
        ("sip", "transport", "routing", "store", "api", "privacy", "webhooks"),
        "the media worker is a separate process that knows only the vault",
    ),
    (
        "vault",
        ("sip", "transport", "routing", "store", "api", "privacy", "media", "webhooks"),
        "encryption at rest depends on nothing but its config",
    ),
    (
        "privacy",
        ("routing", "api", "webhooks", "sip", "transport", "media"),
        "privacy rights act on stored data only",
    ),
    ("webhooks", ("routing", "api", "privacy"), "delivery reads the store only"),
    ("api", ("transport", "media"), "the API reaches calls and media through routing"),
    (
        "console",
        ("sip", "transport", "media", "vault"),
        "the console is pages over the API's services: routing, store, privacy",
    ),
)

#: The composition root and the command line sit on top: only these may import them.
TOP_MODULES = ("app", "cli")
TOP_IMPORTERS = ("callrouter.cli", "callrouter.__main__")
#: The console is mounted by the composition root (and its users commands live in the CLI):
#: nothing else may import it, so the API never depends on its pages.
CONSOLE_IMPORTERS = ("callrouter.app", "callrouter.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every callrouter name a module imports, anywhere in it (functions, TYPE_CHECKING too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # Relative imports would hide an edge from this check: the code uses absolute ones.
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "callrouter" or name.startswith("callrouter.")}


def within(name: str, part: str) -> bool:
    prefix = f"callrouter.{part}" if part else "callrouter"
    return name == prefix or name.startswith(prefix + ".")


def layer_violations() -> list[str]:
    found = []
    for path in sorted((ROOT / "callrouter").rglob("*.py")):
        source = module_name(path)
        for target in sorted(imported_names(path)):
            for part, forbidden, why in LAYER_RULES:
                if within(source, part) and not within(target, part):
                    bans = [ban or "callrouter" for ban in forbidden if within(target, ban)]
                    found += [
                        f"{source} imports {target}: {part} imports no {b} ({why})" for b in bans
                    ]
            if source not in TOP_IMPORTERS and any(within(target, top) for top in TOP_MODULES):
                found.append(f"{source} imports {target}: only cli and __main__ import app/cli")
            if (
                within(target, "console")
                and not within(source, "console")
                and source not in CONSOLE_IMPORTERS
            ):
                found.append(f"{source} imports {target}: only app and cli import console")
    return found


def test_imports_follow_the_layer_order() -> None:
    assert layer_violations() == []


def test_layer_check_sees_the_imports_it_judges() -> None:
    """The checker is only as good as its parser: it must see the real edges."""
    assert "callrouter.sip.events.Flow" in imported_names(ROOT / "callrouter/transport/udp.py")
    assert "callrouter.cli.main" in imported_names(ROOT / "callrouter/__main__.py")
    assert "callrouter.call_events.CallEvent" in imported_names(ROOT / "callrouter/store/spool.py")
    assert "callrouter.console.site.install" in imported_names(ROOT / "callrouter/app.py")


def test_row_ids_are_time_ordered() -> None:
    """Every row id comes from store/ids.py new_id() (UUIDv7), so ordering by id is ordering by
    time. Random strings that are not ids (a Call-ID) come from secrets, so no uuid1/uuid4."""
    offenders = []
    for path in sorted((ROOT / "callrouter").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            called = node.func if isinstance(node, ast.Call) else None
            name = getattr(called, "attr", getattr(called, "id", None))
            if name in ("uuid1", "uuid4"):
                offenders.append(f"{relative}:{node.lineno}: {name}()")
    assert offenders == []
