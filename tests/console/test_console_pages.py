"""The console's pages after real calls: SIPp carriers and PBXs, one call recorded between two
pjsua2 phones, all through ``callrouter serve``, looked at in Chromium by users of each role."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request

from tests.conftest import world_traversable_tempdir
from tests.console.conftest import (
    DEFAULT_ARGS,
    ConsoleServer,
    LoggedIn,
    assert_fits_narrowest,
    axe_check,
    running_console,
    screenshot,
)
from tests.e2e.sipp import SCENARIOS, free_port, run_sipp, sipp_command

CALLER = "+447700900123"
"""The caller of the SIPp carrier scenario and of the pjsua2 phone."""
AUDIO_CHUNK = 4096
"""Most bytes the test server answers an open-ended Range of the audio with."""


@pytest.fixture(scope="module")
def recordings_dir() -> Iterator[Path]:
    path = world_traversable_tempdir("callrouter-console-recordings-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def console_server(recordings_dir: Path) -> Iterator[ConsoleServer]:
    """A server of this module's own, with a media worker (the shared one has none) to record
    the phones' call."""
    with running_console(
        *DEFAULT_ARGS,
        "--media-workers",
        "1",
        "--recordings-dir",
        str(recordings_dir),
        # Smaller than the 3 s test recording, so its audio comes in several parts, as a long
        # recording's does with the default 256 KiB: a seek then has to ask the server.
        "--console-audio-chunk-bytes",
        str(AUDIO_CHUNK),
    ) as server:
        yield server


@dataclass(frozen=True)
class Calls:
    """What the module's calls left: the client, its recorded call and recording."""

    client_id: str
    recorded_call_id: str
    recording_id: str


def pbx(scenario: str, calls: int, workdir: Path) -> tuple[subprocess.Popen[str], int]:
    """A SIPp process playing the client's phone system (as tests/e2e/test_calls.py's Pbx)."""
    port = free_port()
    directory = workdir / f"pbx-{port}"
    directory.mkdir()
    command = sipp_command(SCENARIOS / scenario, 0, directory, calls=calls)
    command[1] = "-bind_local"
    command = [c for c in command if c != "-timeout_error"]
    command[command.index("-p") + 1] = str(port)
    process = subprocess.Popen(
        command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return process, port


def until(what: str, check: Any, timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


@pytest.fixture(scope="module")
def calls(console_server: ConsoleServer) -> Iterator[Calls]:
    """Two answered calls from Google (SIPp carrier with a caller number -> SIPp PBX), one busy
    call from Bing (caller withheld), one recorded call from a newsletter (pjsua2 phones)."""
    server = console_server
    workdir = world_traversable_tempdir("callrouter-console-calls-")
    client_id = server.new_client("Acme Dental")
    sip_port = server.server.sip_port()

    def number(e164: str, destination: str, source: str, campaign: str, record: bool) -> None:
        server.api(
            "POST",
            "/v1/numbers",
            {
                "client_id": client_id,
                "e164": e164,
                "destination": destination,
                "record": record,
                "source": source,
                "campaign": campaign,
            },
        )

    answering, answer_port = pbx("pbx_hangs_up.xml", 2, workdir)
    busy, busy_port = pbx("pbx_busy.xml", 1, workdir)
    try:
        number("+441515557001", f"sip:desk@127.0.0.1:{answer_port}", "google", "spring", False)
        number("+441515557002", f"sip:desk@127.0.0.1:{busy_port}", "bing", "brand", False)
        desk_port = free_port()
        number("+441515557003", f"sip:desk@127.0.0.1:{desk_port}", "newsletter", "winter", True)
        result = run_sipp(
            SCENARIOS / "carrier_callee_hangs_up.xml",
            sip_port,
            workdir,
            service="+441515557001",
            calls=2,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        # SIPp's own uac counts the busy answer the carrier is relayed as a failed call.
        result = run_sipp("uac", sip_port, workdir, service="+441515557002")
        assert "486 Busy Here" in result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
        for process in (answering, busy):
            output, _ = process.communicate(timeout=60)
            assert process.returncode == 0, output[-2000:]
        phones = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parents[1] / "e2e" / "two_phones.py"),
                str(sip_port),
                str(desk_port),
                "+441515557003",
                "440",
                "1000",
                "150",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert phones.returncode == 0, phones.stdout[-3000:] + phones.stderr[-3000:]
        ready = server.server.wait_event("recording.ready", interrupted=False)
        until(
            "four ended calls",
            lambda: (
                len(
                    server.fetch(
                        "SELECT 1 FROM calls WHERE client_id = $1::uuid AND state = 'ended'",
                        client_id,
                    )
                )
                == 4
            ),
        )
        yield Calls(client_id, ready["call_id"], ready["recording_id"])
    finally:
        for process in (answering, busy):
            if process.poll() is None:
                process.kill()
            process.communicate()
        shutil.rmtree(workdir, ignore_errors=True)


def sources_in_log(page: Page) -> list[str]:
    return sorted(page.locator("#call-log td.source").all_inner_texts())


def test_console_overview_chart_and_call_log_show_the_calls_with_their_sources(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("owner", calls.client_id)
    page.goto(console_server.url + "/")
    page.wait_for_selector("#calls-chart[data-drawn=true] canvas")
    assert page.inner_text("#total-calls") == "4"
    assert page.inner_text("#answered-rate") == "75 %"  # three answered, one busy
    headers = page.locator("#calls-per-day thead th").all_text_contents()
    assert sorted(headers[1:-1]) == ["bing", "google", "newsletter"]
    assert "spring" in page.inner_text("#top-campaigns")
    # The chart is drawn: its canvas has pixels that are not the background.
    assert page.evaluate(
        """() => {
            const c = document.querySelector('#calls-chart canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
            return false;
        }"""
    )
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "overview")

    page.goto(console_server.url + "/calls")
    assert sources_in_log(page) == ["bing", "google", "google", "newsletter"]
    callers = page.locator("#call-log td.caller").all_inner_texts()
    assert sorted(callers) == [CALLER, CALLER, CALLER, "withheld"]
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "calls")

    page.goto(console_server.url + "/calls?source=google")
    assert sources_in_log(page) == ["google", "google"]
    page.goto(console_server.url + "/calls?caller=0770+0900+123")
    assert len(sources_in_log(page)) == 3
    answer = page.goto(console_server.url + "/calls?disposition=nope")
    assert answer is not None and answer.status == 400
    assert "disposition: not one of" in page.inner_text("main").lower()

    page.goto(f"{console_server.url}/calls/{calls.recorded_call_id}")
    timeline = page.inner_text("#timeline")
    for step in ("INVITE to +441515557003", "Destination 1 tried", "Call answered", "Call ended"):
        assert step in timeline
    assert "newsletter" in page.inner_text("#attribution")


def seek_start(request: Request) -> int:
    """The first byte a Range request asks for."""
    return int((request.headers.get("range") or "").removeprefix("bytes=").split("-")[0])


def test_console_recording_plays_and_seeking_the_waveform_asks_for_a_range(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("listener", calls.client_id)
    audio_requests: list[Request] = []
    page.on("request", lambda r: audio_requests.append(r) if "/audio" in r.url else None)
    page.goto(f"{console_server.url}/calls/{calls.recorded_call_id}")
    page.wait_for_selector(".player[data-ready=true]")
    assert page.evaluate(
        """() => {
            const c = document.querySelector('#waveform');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let drawn = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] !== 0) drawn++;
            return drawn > 100;
        }"""
    )
    # A click at 80 % of the waveform seeks there: the browser asks the server for that part
    # with a Range past the first byte (the parts it had hold only the start), answered 206.
    box = page.locator("#waveform").bounding_box()
    assert box is not None

    def seeks_far(request: Request) -> bool:
        first = (request.headers.get("range") or "").removeprefix("bytes=").split("-")[0]
        return "/audio" in request.url and first.isdigit() and int(first) > AUDIO_CHUNK

    assert not audio_requests  # preload="none": nothing is fetched before a play or seek
    with page.expect_request_finished(seeks_far, timeout=15_000) as seek:
        page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
    answer = seek.value.response()
    assert answer is not None and answer.status == 206
    assert answer.headers["content-range"].startswith(f"bytes {seek_start(seek.value)}-")
    position = "document.querySelector('#audio').currentTime"
    until(
        "the audio's metadata", lambda: page.evaluate("document.querySelector('#audio').readyState")
    )
    duration = page.evaluate("document.querySelector('#audio').duration")
    assert duration > 2 and page.evaluate(position) > duration * 0.7
    page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)  # back to the start
    page.click(".player button.play")
    until("the audio to play", lambda: page.evaluate(position) > 0.3, timeout=15)
    assert page.inner_text(".player button.play") == "Pause"

    # Every fetch of the audio was a Range request answered with a part (206).
    assert audio_requests
    for request in audio_requests:
        assert (request.headers.get("range") or "").startswith("bytes="), request.headers
        answer = request.response()
        assert answer is not None and answer.status == 206
    # Without a Range the whole file comes (200); an open-ended Range gets at most a chunk,
    # and says which part it holds.
    url = f"{console_server.url}/recordings/{calls.recording_id}/audio"
    whole = page.request.get(url)
    assert whole.status == 200
    body = whole.body()
    assert len(body) > 3 * AUDIO_CHUNK
    part = page.request.get(url, headers={"Range": "bytes=10-"})
    assert part.status == 206 and part.body() == body[10 : 10 + AUDIO_CHUNK]
    assert part.headers["content-range"] == f"bytes 10-{10 + AUDIO_CHUNK - 1}/{len(body)}"
    middle = len(body) - AUDIO_CHUNK // 2
    part = page.request.get(url, headers={"Range": f"bytes={middle}-"})
    assert part.status == 206 and part.body() == body[middle:]
    assert part.headers["content-range"] == f"bytes {middle}-{len(body) - 1}/{len(body)}"
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "call")
    actions = console_server.fetch(
        "SELECT action, target FROM console_audit WHERE client_id = $1::uuid", calls.client_id
    )
    assert ("recording.listen", calls.recording_id) in [tuple(a) for a in actions]


def test_console_analyst_sees_masked_numbers_in_pages_and_csv_and_gets_403_on_audio(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("analyst", calls.client_id)
    page.goto(console_server.url + "/calls")
    callers = page.locator("#call-log td.caller").all_inner_texts()
    assert sorted(callers) == ["+44••••••••23"] * 3 + ["withheld"]
    assert CALLER not in page.content()
    assert page.locator("#f-caller").count() == 0  # no search by caller number either
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "calls-analyst")

    exported = page.request.get(console_server.url + "/calls.csv?source=google")
    assert exported.status == 200
    rows = list(csv.DictReader(io.StringIO(exported.text())))
    assert [r["caller_number"] for r in rows] == ["+44••••••••23"] * 2
    assert {r["source"] for r in rows} == {"google"}
    assert CALLER not in exported.text()

    page.goto(f"{console_server.url}/calls/{calls.recorded_call_id}")
    assert page.locator("audio").count() == 0
    assert "may not listen" in page.inner_text("main")
    axe_check(page)
    for path in ("audio", "peaks"):
        answer = page.request.get(f"{console_server.url}/recordings/{calls.recording_id}/{path}")
        assert answer.status == 403, path
    assert page.request.get(console_server.url + "/calls?caller=123").status == 403

    actions = console_server.fetch(
        "SELECT action FROM console_audit WHERE client_id = $1::uuid", calls.client_id
    )
    assert "calls.export" in [a["action"] for a in actions]


def test_console_pages_of_another_client_are_not_found(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("owner")  # a new client of its own
    page.goto(console_server.url + "/calls")
    assert page.locator("#call-log").count() == 0
    assert page.goto(f"{console_server.url}/calls/{calls.recorded_call_id}").status == 404
    for path in ("audio", "peaks"):
        answer = page.request.get(f"{console_server.url}/recordings/{calls.recording_id}/{path}")
        assert answer.status == 404, path
    # A path that is not an id names no page either: 404 like the rest of the console.
    for path in ("/calls/not-an-id", "/recordings/not-an-id/peaks"):
        assert page.request.get(console_server.url + path).status == 404, path
    page.goto(console_server.url + "/")
    assert page.inner_text("#total-calls") == "0"
    axe_check(page)


def test_console_operator_chooses_a_client_and_every_page_stays_with_it(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("operator")
    page.goto(console_server.url + "/")
    assert page.url == console_server.url + "/clients"  # no client chosen yet
    axe_check(page)
    page.click(f"#clients a[href='/?client={calls.client_id}']")
    assert page.inner_text("#total-calls") == "4"
    # The navigation's links carry no client: the choice is kept for the next pages.
    page.click("nav a[href='/calls']")
    assert sources_in_log(page) == ["bing", "google", "google", "newsletter"]
    page.goto(console_server.url + "/clients")
    assert page.get_attribute(f"#clients a[href='/?client={calls.client_id}']", "aria-current")

    # A client's own user sent the same cookie sees their own client only; /clients is not
    # there for them.
    owner, _ = logged_in("owner")
    owner.context.add_cookies(
        [{"name": "callrouter_client", "value": calls.client_id, "url": console_server.url}]
    )
    owner.goto(console_server.url + "/calls")
    assert owner.locator("#call-log").count() == 0
    assert owner.goto(console_server.url + "/clients").status == 404


def test_console_owner_manages_numbers_pools_keys_and_webhooks(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("owner", calls.client_id)
    base = console_server.url
    page.goto(base + "/numbers")
    assert page.locator("#numbers tbody tr").count() == 3
    page.click("text=Add a number")
    page.fill("#n-e164", "+44 151 555 7010")
    page.fill("#n-source", "radio")
    page.click("form[action='/numbers'] button[type=submit]")
    page.wait_for_selector("text=The number is added.")
    row = page.locator("#numbers tr", has_text="+441515557010")
    assert "radio" in row.inner_text()
    row.locator("a").click()
    page.fill("#n-campaign", "autumn")
    page.click("form[action^='/numbers/'] button:has-text('Save')")
    page.wait_for_selector("text=The number is saved.")
    assert "autumn" in page.locator("#numbers tr", has_text="+441515557010").inner_text()
    page.locator("#numbers tr", has_text="+441515557010").locator("a").click()
    page.click("button:has-text('Release')")
    page.wait_for_selector("text=The number is released")
    assert page.locator("#numbers tr", has_text="+441515557010").count() == 0

    page.click("text=Create a pool")
    page.fill("#p-name", "website")
    page.fill("#p-origins", "https://www.acme.example")
    page.click("form[action='/pools'] button[type=submit]")
    page.wait_for_selector("text=The pool is created.")
    tag = page.locator("textarea.swap-tag").input_value()
    assert 'integrity="sha384-' in tag and 'data-pool="pk_' in tag and base in tag
    page.click("text=Edit pool")
    page.fill("#p-hold", "30")  # under the API's minimum: refused naming the field
    page.evaluate("document.querySelector('#p-hold').removeAttribute('min')")
    page.click("button:has-text('Save pool')")
    assert "lease_hold_seconds" in page.inner_text("#form-error")
    axe_check(page)
    screenshot(page, "pool")
    page.fill("#p-hold", "900")
    page.select_option("#p-model", "last_non_direct")
    page.click("button:has-text('Save pool')")
    page.wait_for_selector("text=The pool is saved.")
    page.click("text=Edit pool")
    assert page.input_value("#p-hold") == "900"
    assert page.locator("#p-model").input_value() == "last_non_direct"
    page.goto(base + "/numbers")
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "numbers")

    page.goto(base + "/keys")
    page.fill("#key-name", "CRM sync")
    page.click("form[action='/keys'] button[type=submit]")
    secret = page.inner_text("#secret")
    assert secret.startswith("crk_")
    api = page.request.get(base + "/v1/numbers", headers={"Authorization": f"Bearer {secret}"})
    assert api.status == 200 and len(api.json()["data"]) == 3
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "keys")
    page.goto(base + "/keys")
    assert secret not in page.content()  # shown once
    page.click("button[aria-label='Revoke the key CRM sync']")
    page.wait_for_selector("text=The key is revoked.")
    until(
        "the revoked key to be refused",
        lambda: (
            page.request.get(
                base + "/v1/numbers", headers={"Authorization": f"Bearer {secret}"}
            ).status
            == 401
        ),
        timeout=10,
    )

    page.goto(base + "/webhooks")
    page.fill("#hook-url", "http://127.0.0.1:9/hook")
    page.click("form[action='/webhooks'] button[type=submit]")
    assert page.inner_text("#new-secret").count("whsec_") == 1
    page.goto(base + "/webhooks")
    page.click("button:has-text('Send a test event')")
    page.wait_for_selector("text=A test event is queued.")
    assert "webhook.test" in page.inner_text("table.deliveries")
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "webhooks")

    actions = {
        row["action"]
        for row in console_server.fetch(
            "SELECT action FROM console_audit WHERE client_id = $1::uuid", calls.client_id
        )
    }
    assert {
        "number.create",
        "number.update",
        "number.release",
        "pool.create",
        "pool.update",
        "key.create",
        "key.revoke",
        "webhook.create",
        "webhook.test",
    } <= actions


def test_console_privacy_register_shows_overdue_requests_and_carries_them_out(
    console_server: ConsoleServer, calls: Calls, logged_in: LoggedIn
) -> None:
    page, _ = logged_in("owner", calls.client_id)
    base = console_server.url
    page.goto(base + "/privacy")
    page.click("text=Register a request")
    page.select_option("#r-kind", "objection")
    page.fill("#r-phone", "+44 7700 900555")
    page.click("form[action='/privacy'] button[type=submit]")
    page.wait_for_selector("text=The request is registered.")
    assert page.inner_text("#suppressed") == "1"

    page.click("text=Register a request")
    page.select_option("#r-kind", "access")
    page.fill("#r-phone", CALLER)
    page.click("form[action='/privacy'] button[type=submit]")
    page.wait_for_selector("text=The request is registered.")
    console_server.fetch(
        "UPDATE privacy_requests SET due_at = now() - interval '1 day' "
        "WHERE client_id = $1::uuid AND kind = 'access'",
        calls.client_id,
    )
    page.goto(base + "/privacy")
    late = page.locator("#requests td.overdue")
    assert late.count() == 1 and "overdue" in late.inner_text()
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#requests td.overdue')).color")
        == "rgb(164, 22, 26)"
    )
    axe_check(page)
    assert_fits_narrowest(page)
    screenshot(page, "privacy")

    row = page.locator("#requests tr", has_text="access")
    row.locator("input[name=phone]").fill(CALLER)
    with page.expect_download() as download:
        row.locator("button:has-text('Export')").click()
    archive = download.value.path()
    assert archive.read_bytes()[:2] == b"PK"
    page.goto(base + "/privacy")
    assert page.locator("#requests td.overdue").count() == 0
    trail = page.inner_text("#privacy-audit")
    assert "suppression.objection" in trail and "export" in trail

    analyst, _ = logged_in("analyst", calls.client_id)
    for path in ("/privacy", "/keys", "/webhooks", "/users"):
        answer = analyst.goto(base + path)
        assert answer is not None and answer.status == 403, path
