"""The dialplans in service: loaded from a directory, reloaded when files change.

A file that fails validation is refused with ``file:line`` and the version that was loaded
before keeps serving; a number naming a dialplan that does not exist falls back to nothing (the
call is refused with 480 and the reason is logged). ``default`` always exists: when no
``default.toml`` is present the built-in one (the same as the shipped file) rings the number's
destination, then its secondary destination.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from callrouter.routing.dialplan import Dialplan, DialplanError, load_dialplan, parse_dialplan

__all__ = ["BUILTIN_DEFAULT", "DialplanLibrary"]

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
    _stamps: dict[Path, tuple[int, int]] = field(default_factory=dict)

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
        listed = self.directory.iterdir() if self.directory.is_dir() else iter([])
        for path in sorted(p for p in listed if p.suffix == ".toml"):
            seen.add(path)
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._stamps.get(path) == stamp:
                continue
            self._load(path)
            self._stamps[path] = stamp  # after the load: a file that could not be opened is retried
        for path in [p for p in self._stamps if p not in seen]:
            del self._stamps[path]
            if self.plans.pop(path.stem, None) is not None:
                self.say(f"dialplan: removed {path.stem} ({path} is gone)")
            self.errors.pop(path.stem, None)

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
