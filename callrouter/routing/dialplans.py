"""The dialplans in service: loaded from a directory, reloaded when files change.

A file that fails validation is refused with ``file:line`` and the version that was loaded
before keeps serving; a change in the prompts directory has every plan that names a prompt (or
was refused) checked again: a plan naming a prompt that was removed is refused then, and its
loaded version keeps serving (the call goes on without the announcement). A number naming a
dialplan that does not exist falls back to nothing (the call is refused with 480 and the
reason is logged). ``default`` always exists: when no ``default.toml`` is present the built-in
one (the same as the shipped file) rings the number's destination, then its secondary
destination.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from callrouter.routing.dialplan import (
    PROMPTS,
    Announce,
    Dialplan,
    DialplanError,
    load_dialplan,
    parse_dialplan,
    prompts_directory,
)

__all__ = ["BUILTIN_DEFAULT", "DialplanLibrary"]

Prompts = frozenset[tuple[str, int, int]]
"""The files of the prompts directory: (name, mtime in ns, size)."""

BUILTIN_DEFAULT = parse_dialplan(
    """description = "Ring the destination, then the secondary destination."

[[step]]
dial = ["{destination}"]

[[step]]
dial = ["{secondary_destination}"]
""",
    "default",
    "<built-in default>",
)


@dataclass(eq=False)
class DialplanLibrary:
    """Every dialplan file in ``directory``, by name.

    :param say: where load, reload and refusal messages go (the operator's console).
    """

    directory: Path
    say: Callable[[str], None] = print
    plans: dict[str, Dialplan] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _stamps: dict[Path, tuple[int, int, Prompts | None]] = field(default_factory=dict)

    def get(self, name: str) -> Dialplan | None:
        plan = self.plans.get(name)
        if plan is None and name == "default":
            return BUILTIN_DEFAULT
        return plan

    def known(self) -> list[str]:
        """The names a number may use: every loaded plan, and ``default``."""
        return sorted({*self.plans, "default"})

    def refresh(self) -> None:
        """Load new and changed files, forget removed ones; refusals keep the last good plan.

        :raises OSError: the directory cannot be listed (no descriptor left, say); every plan
            keeps serving rather than being taken for removed.
        """
        seen: set[Path] = set()
        prompts = self._prompts()
        listed = self.directory.iterdir() if self.directory.is_dir() else iter([])
        for path in sorted(p for p in listed if p.suffix == ".toml"):
            seen.add(path)
            try:
                stat = path.stat()
            except OSError:
                continue
            if self._stamps.get(path) == self._stamp(path, stat, prompts):
                continue
            self._load(path)
            # After the load: a file that could not be opened is retried.
            self._stamps[path] = self._stamp(path, stat, prompts)
        for path in [p for p in self._stamps if p not in seen]:
            del self._stamps[path]
            if self.plans.pop(path.stem, None) is not None:
                self.say(f"dialplan: removed {path.stem} ({path} is gone)")
            self.errors.pop(path.stem, None)

    def _stamp(
        self, path: Path, stat: os.stat_result, prompts: Prompts
    ) -> tuple[int, int, Prompts | None]:
        """What must change for ``path`` to be loaded again: the file, or the prompt files when
        its plan names an operator prompt or was refused (perhaps for a prompt not there yet)."""
        plan = self.plans.get(path.stem)
        named = plan is not None and any(
            isinstance(step.action, Announce) and step.action.prompt not in PROMPTS
            for step in plan.steps
        )
        watched = named or path.stem in self.errors
        return (stat.st_mtime_ns, stat.st_size, prompts if watched else None)

    def _prompts(self) -> Prompts:
        """The prompt files now: when they change, the plans naming prompts are checked again."""
        folder = prompts_directory(self.directory)
        found = set()
        try:
            listed = list(folder.iterdir()) if folder.is_dir() else []
        except PermissionError:
            listed = []  # each plan naming a prompt is refused, saying the file cannot be read
        for path in listed:
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while listed: as if not there
            found.add((path.name, stat.st_mtime_ns, stat.st_size))
        return frozenset(found)

    def _load(self, path: Path) -> None:
        name = path.stem
        try:
            plan = load_dialplan(path)
        except DialplanError as exc:
            self.errors[name] = str(exc)
            kept = " (the previous version keeps serving)" if name in self.plans else ""
            self.say(f"dialplan: refused {exc}{kept}")
            return
        replaced = name in self.plans
        self.plans[name] = plan
        self.errors.pop(name, None)
        verb = "reloaded" if replaced else "loaded"
        self.say(f"dialplan: {verb} {name} from {path} ({len(plan.steps)} steps)")
