"""Dialplans: every refusal names file:line, conditions hold when they should, reloads keep the
last good version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from callrouter.routing.dialplan import (
    Announce,
    Dial,
    DialplanError,
    Reject,
    SetDuration,
    explain,
    load_dialplan,
    parse_dialplan,
)
from callrouter.routing.dialplans import DialplanLibrary

SHIPPED = Path(__file__).resolve().parents[2] / "dialplans"

BAD = [
    ("step = 1\nfoo = 2\n", 2, "unknown key 'foo'"),
    ("timezone = 'Mars/Olympus'\n[[step]]\nreject = 480\n", 1, "unknown timezone"),
    ("description = 'x'\n", 1, "at least one [[step]]"),
    ("[[step]]\nreject = 480\n\n[[step]]\nring_timeout = 5\n", 4, "step 2: needs exactly one"),
    ("[[step]]\ndial = 'ftp://x'\n", 2, "not a SIP URI"),
    ("[[step]]\ndial = ['{destination}']\nring_timeout = 0\n", 3, "ring_timeout must be"),
    ("[[step]]\ndial = '{d}'\ncontinue_on = ['bored']\n", 3, "continue_on must list"),
    ("[[step]]\nreject = 200\n", 2, "SIP status from 400 to 699"),
    ("[[step]]\nrecord = 'yes'\n", 2, "record must be true or false"),
    ("[[step]]\nreject = 480\nring_timeout = 3\n", 3, "ring_timeout only goes with dial"),
    ("[[step]]\nwhen = { days = ['funday'] }\nreject = 480\n", 2, "days must list"),
    ("[[step]]\nwhen = { hours = '9-5' }\nreject = 480\n", 2, 'hours must look like "09:00-17:30"'),
    ("[[step]]\nwhen = { hours = '25:00-26:00' }\nreject = 480\n", 2, "is not a time range"),
    ("[[step]]\nwhen = { moon = 'full' }\nreject = 480\n", 2, "unknown condition 'moon'"),
    ("[[step]]\ndial = [\n", 2, "not valid TOML"),
    ("[[step]]\nmax_duration = -5\n", 2, "max_duration must be a positive"),
    ("[[step]]\nannounce = 'hello.wav'\n", 2, "announce must be recording-notice or the name"),
    ("[[step]]\nannounce = 'greeting'\n", 2, "'greeting': this dialplan has no prompts"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_dialplans_are_refused_naming_file_line_and_problem(
    text: str, line: int, problem: str
) -> None:
    with pytest.raises(DialplanError) as caught:
        parse_dialplan(text, "x", "dialplans/x.toml")
    message = str(caught.value)
    assert message.startswith(f"dialplans/x.toml:{line}: "), message
    assert problem in message


def test_the_shipped_dialplans_load() -> None:
    office = load_dialplan(SHIPPED / "business-hours.toml")
    assert office.timezone.key == "Europe/London"
    assert [type(s.action) for s in office.steps] == [Dial, Dial, SetDuration, Dial, Reject]
    assert load_dialplan(SHIPPED / "default.toml").name == "default"


PARAMS = {"destination": "sip:desk@pbx", "secondary_destination": "+447700900999"}


def actions_at(when: str, caller: str = "+441515550000") -> list[str]:
    plan = load_dialplan(SHIPPED / "business-hours.toml")
    at = datetime.fromisoformat(when)
    return [type(s.action).__name__ for s in plan.applicable(at, caller, PARAMS)]


def test_business_hours_in_the_plans_own_timezone() -> None:
    # Wednesday 08:30 UTC is 08:30 in London in November: closed; 09:30 is open.
    assert actions_at("2026-11-25T08:30:00+00:00") == ["SetDuration", "Dial", "Reject"]
    assert actions_at("2026-11-25T09:30:00+00:00") == [
        "Dial",
        "Dial",
        "SetDuration",
        "Dial",
        "Reject",
    ]
    # In summer London is UTC+1: 08:30 UTC is 09:30 local, open.
    assert actions_at("2026-07-01T08:30:00+00:00")[0] == "Dial"
    # Saturday: closed all day.
    assert actions_at("2026-11-28T11:00:00+00:00")[0] == "SetDuration"


def test_caller_prefix_parameters_and_overnight_hours() -> None:
    plan = parse_dialplan(
        """
[[step]]
when = { caller_prefix = ["+4477", "+4478"], param = { vip = "yes" } }
dial = "{destination}"

[[step]]
when = { hours = "22:00-06:00" }
reject = 480
""",
        "p",
        "p.toml",
    )
    late = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    noon = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    vip = {"vip": "yes", "destination": "sip:a@b"}
    assert len(plan.applicable(noon, "+447700900123", vip)) == 1
    assert plan.applicable(noon, "+441515550000", vip) == []
    assert plan.applicable(noon, "+447700900123", {"vip": "no"}) == []
    assert len(plan.applicable(late, "+1", {})) == 1
    assert len(plan.applicable(datetime(2026, 11, 25, 5, 59, tzinfo=UTC), "+1", {})) == 1


def test_explain_walks_the_steps_with_parameters_filled_in() -> None:
    plan = load_dialplan(SHIPPED / "business-hours.toml")
    lines = explain(plan, datetime(2026, 11, 25, 19, 0, tzinfo=UTC), "+447700900123", PARAMS)
    assert lines[0] == "at Wed 2026-11-25 19:00 Europe/London"
    assert lines[1].startswith("  skip    step 1 (line 9): on mon,tue,wed,thu,fri 09:00-17:30")
    assert lines[3] == "  run     step 3 (line 19): max duration 1800 s"
    assert lines[4] == "  run     step 4 (line 22): dial: skipped, {closed_destination} not set"
    assert lines[5] == "  run     step 5 (line 27): reject 480 Closed"


def test_a_broken_edit_is_refused_and_the_last_good_version_keeps_serving(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    library = DialplanLibrary(tmp_path, said.append)
    path = tmp_path / "office.toml"
    path.write_text("[[step]]\ndial = '{destination}'\nring_timeout = 20\n")
    library.refresh()
    good = library.get("office")
    assert good is not None
    path.write_text("[[step]]\ndial = '{destination}'\nring_timeout = 2000\n")
    library.refresh()
    assert library.get("office") is good
    assert said[-1].startswith(f"dialplan: refused {path}:3: step 1: ring_timeout")
    assert said[-1].endswith("(the previous version keeps serving)")
    assert library.errors["office"].startswith(f"{path}:3:")
    path.write_text("[[step]]\ndial = '{destination}'\nring_timeout = 25\n")
    library.refresh()
    fixed = library.get("office")
    assert fixed is not None and fixed is not good and "office" not in library.errors
    path.unlink()
    library.refresh()
    assert library.get("office") is None
    assert library.get("default") is not None  # the built-in default always exists


def test_an_announcement_step_is_read_and_explained() -> None:
    plan = parse_dialplan(
        "[[step]]\nannounce = 'recording-notice'\n\n[[step]]\ndial = '{destination}'\n",
        "announced",
        "dialplans/announced.toml",
    )
    assert plan.steps[0].action == Announce("recording-notice")
    lines = explain(plan, datetime(2026, 11, 25, 12, tzinfo=UTC), "", {"destination": "sip:d@x"})
    assert any("announce recording-notice to the caller" in line for line in lines)
