"""Dialplans: small routing programs in TOML, validated at load, evaluated per call.

A dialplan is an ordered list of ``[[step]]`` tables. Each step may carry a ``when`` condition
(days, hours, caller prefix, number parameters) and does one thing: ``dial`` destinations (in
parallel, with a ring timeout, continuing to the next step on the outcomes in ``continue_on``),
``reject`` with a status, ``record`` on or off, set ``max_duration``, or ``announce`` a prompt
(the built-in ``recording-notice`` tone, or an operator's ``prompts/<name>.wav`` beside the
dialplan files, checked when the plan is loaded). Steps whose condition does not hold are
skipped. A plan that runs out of steps answers 480.

    timezone = "Europe/London"

    [[step]]
    when = { days = ["mon", "tue", "wed", "thu", "fri"], hours = "09:00-17:30" }
    dial = ["{destination}"]
    ring_timeout = 25

    [[step]]
    reject = 480

Errors name the file and line: ``dialplans/office.toml:7: step 2: ring_timeout must be ...``.
"""

from __future__ import annotations

import errno
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callrouter.media.prompt import (
    PROMPT_NAME,
    RECORDING_NOTICE,
    PromptError,
    check_prompt,
    prompt_path,
)

__all__ = [
    "OUTCOMES",
    "PROMPTS",
    "Action",
    "Announce",
    "Condition",
    "Dial",
    "Dialplan",
    "DialplanError",
    "Reject",
    "SetDuration",
    "SetRecording",
    "Step",
    "describe",
    "explain",
    "load_dialplan",
    "parse_dialplan",
    "prompts_directory",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OUTCOMES = ("busy", "no_answer", "error", "rejected")
"""How a dial step can fail: 486/600 busy; ring timeout or 408/480; 5xx, no route or timeout of
the transaction; any other 4xx/6xx refusal."""
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class DialplanError(ValueError):
    """A dialplan file that cannot be used; the message starts with ``file:line:``."""


Fail = Callable[[int | None, str | None, str], DialplanError]
"""Builds the error for (step index, key, problem)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """When a step applies; every given part must hold."""

    days: frozenset[str] | None = None
    hours: tuple[time, time] | None = None
    caller_prefixes: tuple[str, ...] = ()
    params: dict[str, str] = field(default_factory=dict)

    def holds(self, local: datetime, caller: str, params: dict[str, str]) -> bool:
        if self.days is not None and DAYS[local.weekday()] not in self.days:
            return False
        if self.hours is not None:
            start, end = self.hours
            now = local.time()
            inside = start <= now < end if start <= end else (now >= start or now < end)
            if not inside:
                return False
        if self.caller_prefixes and not caller.startswith(self.caller_prefixes):
            return False
        return all(params.get(k) == v for k, v in self.params.items())

    def describe(self) -> str:
        parts = []
        if self.days is not None:
            parts.append("on " + ",".join(d for d in DAYS if d in self.days))
        if self.hours is not None:
            parts.append(f"{self.hours[0]:%H:%M}-{self.hours[1]:%H:%M}")
        if self.caller_prefixes:
            parts.append("caller " + "|".join(self.caller_prefixes) + "*")
        parts += [f"{k}={v}" for k, v in self.params.items()]
        return " ".join(parts) or "always"


@dataclass(frozen=True, slots=True)
class Dial:
    """Ring every destination at once; the first to answer takes the call."""

    destinations: tuple[str, ...]
    ring_timeout: float = 30.0
    continue_on: frozenset[str] = frozenset({"busy", "no_answer", "error"})

    def targets(self, params: dict[str, str]) -> tuple[list[str], list[str]]:
        """(destinations with parameters filled in, the names of missing parameters)."""
        filled, missing = [], []
        for template in self.destinations:
            names = _PLACEHOLDER.findall(template)
            absent = [n for n in names if not params.get(n)]
            if absent:
                missing += absent
                continue
            filled.append(_PLACEHOLDER.sub(lambda m: params[m.group(1)], template))
        return filled, missing


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SetRecording:
    record: bool


@dataclass(frozen=True, slots=True)
class SetDuration:
    seconds: float


PROMPTS = (RECORDING_NOTICE,)
"""Built-in announcements (recording-notice: the 1400 Hz recorder tone); any other name is an
operator's file in :func:`prompts_directory`."""


def prompts_directory(dialplans: Path) -> Path:
    """Where the operator prompts that the dialplans in ``dialplans`` name are:
    ``<dialplans>/prompts/<name>.wav``, beside the files that use them."""
    return dialplans / "prompts"


@dataclass(frozen=True, slots=True)
class Announce:
    """Play a prompt to the caller (as early media) before the next step dials; only on calls
    that are recorded, whose media goes through the media worker."""

    prompt: str


Action = Dial | Reject | SetRecording | SetDuration | Announce


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    when: Condition
    line: int


@dataclass(frozen=True, slots=True)
class Dialplan:
    name: str
    timezone: ZoneInfo
    steps: tuple[Step, ...]
    description: str = ""

    def applicable(self, at: datetime, caller: str, params: dict[str, str]) -> list[Step]:
        """The steps whose conditions hold for a call at ``at`` (timezone-aware) from ``caller``."""
        local = at.astimezone(self.timezone)
        return [s for s in self.steps if s.when.holds(local, caller, params)]


_STEP_KEYS = {
    "when",
    "dial",
    "ring_timeout",
    "continue_on",
    "reject",
    "reason",
    "record",
    "max_duration",
    "announce",
}
_WHEN_KEYS = {"days", "hours", "caller_prefix", "param"}
_TOP_KEYS = {"timezone", "description", "step"}


class _Lines:
    """Finds the line of a key inside the n-th ``[[step]]`` table, for error messages."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.steps = [i + 1 for i, line in enumerate(self.lines) if line.strip() == "[[step]]"]

    def of(self, step: int | None, key: str | None = None) -> int:
        if step is None:
            start, end = 1, (self.steps[0] if self.steps else len(self.lines) + 1)
        else:
            start = self.steps[step] if step < len(self.steps) else 1
            end = self.steps[step + 1] if step + 1 < len(self.steps) else len(self.lines) + 1
        if key is None:
            return start
        pattern = re.compile(rf"^\s*(when\.)?{re.escape(key)}\s*=|[{{,]\s*{re.escape(key)}\s*=")
        for number in range(start, end):
            if pattern.search(self.lines[number - 1]):
                return number
        return start


def parse_dialplan(text: str, name: str, source: str, prompts: Path | None = None) -> Dialplan:
    """Validate and build a dialplan; DialplanError names ``source:line`` and the problem.

    :param prompts: the directory of operator prompts; None: a plan with no file beside it
        (the built-in default) may announce only the built-in prompts.
    """
    lines = _Lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = match.group(1) if match else str(max(1, len(lines.lines)))
        raise DialplanError(f"{source}:{line}: not valid TOML: {exc}") from None

    def fail(step: int | None, key: str | None, problem: str) -> DialplanError:
        where = "" if step is None else f"step {step + 1}: "
        return DialplanError(f"{source}:{lines.of(step, key)}: {where}{problem}")

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(None, key, f"unknown key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    zone_name = data.get("timezone", "UTC")
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(None, "timezone", f"unknown timezone {zone_name!r}") from None
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise fail(None, None, "a dialplan needs at least one [[step]]")
    steps = tuple(_step(raw, i, fail, lines, prompts) for i, raw in enumerate(raw_steps))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail(None, "description", "description must be a string")
    return Dialplan(name, zone, steps, description)


def _step(raw: dict[str, Any], i: int, fail: Fail, lines: _Lines, prompts: Path | None) -> Step:
    for key in raw:
        if key not in _STEP_KEYS:
            raise fail(i, key, f"unknown key {key!r} (known: {', '.join(sorted(_STEP_KEYS))})")
    actions = [k for k in ("dial", "reject", "record", "max_duration", "announce") if k in raw]
    if len(actions) != 1:
        raise fail(i, None, "needs exactly one of dial, reject, record, max_duration, announce")
    action: Action
    kind = actions[0]
    if kind == "dial":
        action = _dial(raw, i, fail)
    else:
        for key in ("ring_timeout", "continue_on"):
            if key in raw:
                raise fail(i, key, f"{key} only goes with dial")
        if kind == "reject":
            status = raw["reject"]
            if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 699:
                raise fail(i, "reject", "reject must be a SIP status from 400 to 699")
            reason = raw.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise fail(i, "reason", "reason must be a string")
            action = Reject(status, reason)
        elif kind == "announce":
            action = Announce(_prompt(raw["announce"], i, fail, prompts))
        elif kind == "record":
            if not isinstance(raw["record"], bool):
                raise fail(i, "record", "record must be true or false")
            action = SetRecording(raw["record"])
        else:
            seconds = raw["max_duration"]
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
                raise fail(i, "max_duration", "max_duration must be a positive number of seconds")
            action = SetDuration(float(seconds))
    if "reason" in raw and kind != "reject":
        raise fail(i, "reason", "reason only goes with reject")
    return Step(action, _when(raw.get("when", {}), i, fail), lines.of(i))


def _prompt(prompt: Any, i: int, fail: Fail, prompts: Path | None) -> str:
    """A built-in prompt, or an operator's that exists and plays: a mono 8 kHz WAV up to
    60 s. Checked here so that a missing or wrong file is refused with the plan, not found by
    a caller; read from the header only, so a load stays cheap."""
    if prompt in PROMPTS:
        return str(prompt)
    if not isinstance(prompt, str) or not PROMPT_NAME.fullmatch(prompt):
        raise fail(
            i,
            "announce",
            f"announce must be {' or '.join(PROMPTS)} or the name of a prompt file "
            "prompts/<name>.wav (1 to 64 letters, digits, - and _, without .wav)",
        )
    if prompts is None:
        raise fail(i, "announce", f"prompt {prompt!r}: this dialplan has no prompts directory")
    try:
        check_prompt(prompt_path(prompts, prompt))
    except PromptError as exc:
        raise fail(i, "announce", f"prompt {prompt!r}: {exc}") from None
    return prompt


def _dial(raw: dict[str, Any], i: int, fail: Fail) -> Dial:
    destinations = raw["dial"]
    if isinstance(destinations, str):
        destinations = [destinations]
    if (
        not isinstance(destinations, list)
        or not destinations
        or not all(isinstance(d, str) and d.strip() for d in destinations)
    ):
        raise fail(i, "dial", "dial must be a destination or a list of destinations")
    for d in destinations:
        if not (d.startswith(("sip:", "sips:", "+", "{"))):
            raise fail(i, "dial", f"{d!r} is not a SIP URI, an E.164 number or a {{parameter}}")
    timeout = raw.get("ring_timeout", 30)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 600:
        raise fail(i, "ring_timeout", "ring_timeout must be 1 to 600 seconds")
    continue_on = raw.get("continue_on", ["busy", "no_answer", "error"])
    if not isinstance(continue_on, list) or any(o not in OUTCOMES for o in continue_on):
        raise fail(i, "continue_on", f"continue_on must list outcomes from {', '.join(OUTCOMES)}")
    return Dial(tuple(d.strip() for d in destinations), float(timeout), frozenset(continue_on))


def _when(raw: Any, i: int, fail: Fail) -> Condition:
    if not isinstance(raw, dict):
        raise fail(i, "when", "when must be a table")
    for key in raw:
        if key not in _WHEN_KEYS:
            raise fail(
                i, key, f"unknown condition {key!r} (known: {', '.join(sorted(_WHEN_KEYS))})"
            )
    days = raw.get("days")
    if days is not None:
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise fail(i, "days", f"days must list some of {', '.join(DAYS)}")
        days = frozenset(days)
    hours = None
    if "hours" in raw:
        match = _HOURS.match(str(raw["hours"]))
        if not match:
            raise fail(i, "hours", 'hours must look like "09:00-17:30"')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise fail(i, "hours", f"{raw['hours']!r} is not a time range")
        end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
        hours = (time(h1, m1), end)
    prefixes = raw.get("caller_prefix", [])
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise fail(i, "caller_prefix", "caller_prefix must be a string or a list of strings")
    params = raw.get("param", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise fail(i, "param", "param must be a table of strings")
    return Condition(days, hours, tuple(prefixes), dict(params))


def describe(action: Action, params: dict[str, str]) -> str:
    """One line for an action, parameters filled in."""
    if isinstance(action, Dial):
        targets, missing = action.targets(params)
        if not targets:
            return "dial: skipped, " + ", ".join(f"{{{m}}}" for m in missing) + " not set"
        goes_on = ", ".join(sorted(action.continue_on)) or "nothing"
        return (
            f"dial {' + '.join(targets)} (ring {action.ring_timeout:g} s); next step on {goes_on}"
        )
    if isinstance(action, Reject):
        return f"reject {action.status}" + (f" {action.reason}" if action.reason else "")
    if isinstance(action, SetRecording):
        return "recording " + ("on" if action.record else "off")
    if isinstance(action, Announce):
        return f"announce {action.prompt} to the caller (recorded calls only)"
    return f"max duration {action.seconds:g} s"


def explain(plan: Dialplan, at: datetime, caller: str, params: dict[str, str]) -> list[str]:
    """What a call at ``at`` from ``caller`` would do, step by step, for ``dialplan explain``."""
    local = at.astimezone(plan.timezone)
    lines = [f"at {local:%a %Y-%m-%d %H:%M} {plan.timezone.key}"]
    ended = False
    for number, step in enumerate(plan.steps, start=1):
        where = f"step {number} (line {step.line})"
        if ended:
            lines.append(f"  never   {where}: the call was settled before it")
            continue
        if not step.when.holds(local, caller, params):
            lines.append(f"  skip    {where}: {step.when.describe()} does not hold")
            continue
        lines.append(f"  run     {where}: {describe(step.action, params)}")
        if isinstance(step.action, Reject):
            ended = True
        elif isinstance(step.action, Dial) and step.action.targets(params)[0]:
            ended = not step.action.continue_on
    if not ended:
        lines.append("  finally 480 if no destination answered")
    return lines


def load_dialplan(path: Path) -> Dialplan:
    """Read and validate one file; its name is the file name without ``.toml``, and the
    prompts it names are in :func:`prompts_directory` of its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # the process is short of resources, not the file at fault: try it again later
        raise DialplanError(f"{path}:1: cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DialplanError(f"{path}:1: cannot read: {exc}") from None
    return parse_dialplan(text, path.stem, str(path), prompts_directory(path.parent))
