"""Operator prompts named by dialplans: checked at load (name, file, format, length) with the
file and line of the ``announce`` key, and checked again when the prompts directory changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrouter.media.prompt import tone
from callrouter.routing.dialplan import Announce, DialplanError, load_dialplan
from callrouter.routing.dialplans import DialplanLibrary

PLAN = """description = "Words before the desk rings."

[[step]]
record = true

[[step]]
announce = "{prompt}"

[[step]]
dial = "{{destination}}"
"""
ANNOUNCE_LINE = 7


@pytest.fixture
def dialplans(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    return tmp_path


def write_wav(path: Path, seconds: float, rate: int = 8000, channels: int = 1) -> None:
    samples = np.zeros((round(seconds * rate), channels), dtype=np.int16)
    samples[:, 0] = np.resize(tone(440.0, 0.1), len(samples))
    soundfile.write(path, samples, rate, subtype="PCM_16")


def plan_naming(dialplans: Path, prompt: str) -> Path:
    path = dialplans / "office.toml"
    path.write_text(PLAN.format(prompt=prompt))
    return path


def test_a_plan_names_an_operators_prompt_beside_it(dialplans: Path) -> None:
    write_wav(dialplans / "prompts" / "may-be-recorded.wav", 60.0)  # the longest allowed
    plan = load_dialplan(plan_naming(dialplans, "may-be-recorded"))
    assert plan.steps[1].action == Announce("may-be-recorded")


def test_the_built_in_notice_needs_no_file(dialplans: Path) -> None:
    plan = load_dialplan(plan_naming(dialplans, "recording-notice"))
    assert plan.steps[1].action == Announce("recording-notice")


def stereo(path: Path) -> None:
    write_wav(path, 1.0, channels=2)


def wideband(path: Path) -> None:
    write_wav(path, 1.0, rate=16000)


def too_long(path: Path) -> None:
    write_wav(path, 60.02)


def flac(path: Path) -> None:
    soundfile.write(path, tone(440.0, 1.0), 8000, format="FLAC")


def not_audio(path: Path) -> None:
    path.write_text("this call may be recorded")


REFUSED = [
    (None, "cannot read the prompt"),
    (stereo, "a prompt must be mono at 8000 Hz, this is 2 channel(s) at 8000 Hz; convert it"),
    (wideband, "a prompt must be mono at 8000 Hz, this is 1 channel(s) at 16000 Hz; convert"),
    (too_long, "a prompt may last 60 s, this one 60.02 s"),
    (flac, "a prompt must be a WAV file, this is FLAC"),
    (not_audio, "cannot read the prompt"),
]


@pytest.mark.parametrize(("make", "problem"), REFUSED, ids=[r[1][:24] for r in REFUSED])
def test_a_prompt_that_cannot_play_refuses_the_plan_at_the_announce_line(
    dialplans: Path, make: object, problem: str
) -> None:
    wav = dialplans / "prompts" / "greeting.wav"
    if callable(make):
        make(wav)
    path = plan_naming(dialplans, "greeting")
    with pytest.raises(DialplanError) as caught:
        load_dialplan(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{ANNOUNCE_LINE}: step 2: prompt 'greeting': {wav}: ")
    assert problem in message


@pytest.mark.parametrize(
    "name",
    [
        "../greeting",
        "../../etc/passwd",
        "/etc/passwd",
        "prompts/greeting",
        "greeting.wav",
        "..",
        "",
        "-greeting",
        "a\\\\b",
        "x" * 65,
    ],
)
def test_a_prompt_name_that_could_leave_the_prompts_directory_is_refused(
    dialplans: Path, name: str
) -> None:
    # The file the name would reach exists: the name itself is refused, not a missing file.
    write_wav(dialplans / "greeting.wav", 1.0)
    path = plan_naming(dialplans, name)
    with pytest.raises(DialplanError) as caught:
        load_dialplan(path)
    assert str(caught.value) == (
        f"{path}:{ANNOUNCE_LINE}: step 2: announce must be recording-notice or the name of a "
        "prompt file prompts/<name>.wav (1 to 64 letters, digits, - and _, without .wav)"
    )


def test_a_prompt_removed_or_restored_has_the_plan_checked_again(dialplans: Path) -> None:
    said: list[str] = []
    library = DialplanLibrary(dialplans, said.append)
    wav = dialplans / "prompts" / "greeting.wav"
    write_wav(wav, 1.0)
    path = plan_naming(dialplans, "greeting")
    library.refresh()
    loaded = library.get("office")
    assert loaded is not None
    wav.unlink()
    library.refresh()
    assert library.get("office") is loaded  # the call then goes on without the announcement
    assert said[-1].startswith(f"dialplan: refused {path}:{ANNOUNCE_LINE}: step 2: prompt")
    assert said[-1].endswith("(the previous version keeps serving)")
    write_wav(wav, 2.0)
    library.refresh()
    assert "office" not in library.errors
    assert said[-1] == f"dialplan: reloaded office from {path} (3 steps)"


def test_a_plan_refused_for_a_missing_prompt_loads_when_the_prompt_arrives(
    dialplans: Path,
) -> None:
    said: list[str] = []
    library = DialplanLibrary(dialplans, said.append)
    path = plan_naming(dialplans, "greeting")
    (dialplans / "plain.toml").write_text("[[step]]\ndial = '{destination}'\n")
    library.refresh()
    assert library.get("office") is None and "office" in library.errors
    assert library.get("plain") is not None
    said.clear()
    write_wav(dialplans / "prompts" / "greeting.wav", 1.0)
    library.refresh()
    assert library.get("office") is not None and "office" not in library.errors
    # Only the plan that names a prompt was read again.
    assert said == [f"dialplan: loaded office from {path} (3 steps)"]
