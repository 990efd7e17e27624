"""One logging path: UTC timestamps on every line, JSON with the event's fields, levels checked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from callrouter.config import ConfigError, LogConfig
from callrouter.logs import configure, info_event, parse_levels


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # configure() stops looking up callers, threads and processes: pytest's own log reports
    # of later tests show them.
    looked_up = (
        logging._srcfile,
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
    )
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    (
        logging._srcfile,
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
    ) = looked_up
    logging.getLogger("callrouter.chatty").setLevel(logging.NOTSET)


def test_json_lines_carry_time_level_logger_and_the_event_fields() -> None:
    out = io.StringIO()
    configure(LogConfig(format="json"), out)
    logging.getLogger("callrouter.routing.b2bua").info(
        "call: x ended", extra={"event": "call.ended", "call_id": "c1", "sip_call_id": "abc@h"}
    )
    record = json.loads(out.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert (record["level"], record["logger"], record["message"]) == (
        "INFO",
        "callrouter.routing.b2bua",
        "call: x ended",
    )
    assert (record["event"], record["call_id"], record["sip_call_id"]) == (
        "call.ended",
        "c1",
        "abc@h",
    )


def test_text_lines_start_with_a_utc_timestamp() -> None:
    out = io.StringIO()
    configure(LogConfig(), out)
    logging.getLogger("callrouter").warning("http: listening on http://127.0.0.1:8080")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING callrouter: http: listening on "
        r"http://127\.0\.0\.1:8080\n",
        out.getvalue(),
    )


def test_per_component_levels_quiet_one_logger_only() -> None:
    out = io.StringIO()
    configure(LogConfig(level="debug", levels="callrouter.chatty=error"), out)
    logging.getLogger("callrouter.chatty").warning("hidden")
    logging.getLogger("callrouter.other").debug("shown")
    assert "hidden" not in out.getvalue() and "shown" in out.getvalue()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (LogConfig(format="xml"), "log.format: 'xml' is not text or json"),
        (LogConfig(level="loud"), "log.level: 'loud' is not a level"),
        (LogConfig(levels="callrouter.sip"), "log.levels: 'callrouter.sip' is not logger=level"),
        (LogConfig(levels="callrouter.sip=shout"), "log.levels: callrouter.sip: 'shout'"),
    ],
)
def test_bad_settings_name_the_setting(settings: LogConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        configure(settings, io.StringIO())


def test_levels_parse_to_logging_levels() -> None:
    assert parse_levels(" a=debug, b.c=WARNING ,") == {"a": logging.DEBUG, "b.c": logging.WARNING}


class _CountedWrites(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_a_loop_turns_lines_go_out_in_one_write_in_the_order_logged() -> None:
    out = _CountedWrites()
    configure(LogConfig(), out)
    log = logging.getLogger("callrouter.access")
    for i in range(50):
        log.info("request %d", i)
    assert out.writes == 0  # still this turn
    await asyncio.sleep(0)  # the turn ends: the lines waiting are written
    assert out.writes == 1
    assert [line.rsplit(" ", 1)[1] for line in out.getvalue().splitlines()] == [
        str(i) for i in range(50)
    ]
    log.info("before")
    log.warning("urgent")  # at once, after what was waiting
    assert out.getvalue().splitlines()[-2:][0].endswith("before")
    assert out.getvalue().splitlines()[-1].endswith("urgent")


def test_lines_logged_off_the_loop_are_written_at_once() -> None:
    out = _CountedWrites()
    configure(LogConfig(), out)
    logging.getLogger("callrouter").info("started")
    assert out.getvalue().endswith("started\n")


EVENT_FIELDS = {
    "event": "http.request",
    "method": 'GÉT"\\',  # what JSON must escape, and a character it need not
    "route": "/v1/sessions/{session_id}/heartbeat",
    "status": 200,
    "duration_ms": 0.312,
    "key_id": None,
}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_event_line_is_the_line_its_record_makes(log_format: str) -> None:
    # info_event writes without a LogRecord when only this handler is there: the same text.
    out = io.StringIO()
    configure(LogConfig(format=log_format), out)
    log = logging.getLogger("callrouter.access")
    log.info('GÉT"\\ /v1/x 200 0.3 ms key -', extra=EVENT_FIELDS)
    info_event(log, 'GÉT"\\ /v1/x 200 0.3 ms key -', EVENT_FIELDS)
    from_record, direct = TIME.sub("T", out.getvalue()).splitlines()
    assert direct == from_record
    assert out.getvalue().count("http.request") == (2 if log_format == "json" else 0)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_event_reaches_any_other_handler_as_a_record() -> None:
    configure(LogConfig(format="json"), io.StringIO())
    other = _Kept()
    seen = other.records
    logging.getLogger().addHandler(other)
    log = logging.getLogger("callrouter.access")
    info_event(log, "GET /v1/x 200 0.3 ms key -", EVENT_FIELDS)
    assert [(r.getMessage(), r.route, r.status) for r in seen] == [  # type: ignore[attr-defined]
        ("GET /v1/x 200 0.3 ms key -", EVENT_FIELDS["route"], 200)
    ]
    logging.getLogger().removeHandler(other)
    log.addFilter(lambda record: False)  # a filter on the way is honoured too
    try:
        info_event(log, "GET /v1/x 200 0.3 ms key -", EVENT_FIELDS)
    finally:
        log.filters.clear()
    assert len(seen) == 1


async def test_events_keep_levels_and_wait_for_the_loop_turn() -> None:
    out = _CountedWrites()
    configure(LogConfig(format="json", levels="callrouter.quiet=warning"), out)
    info_event(logging.getLogger("callrouter.quiet"), "hidden", EVENT_FIELDS)
    for i in range(3):
        info_event(logging.getLogger("callrouter.access"), f"request {i}", EVENT_FIELDS)
    assert out.writes == 0
    await asyncio.sleep(0)  # the turn ends
    assert out.writes == 1
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == [
        "request 0",
        "request 1",
        "request 2",
    ]
    logging.getLogger("callrouter.quiet").setLevel(logging.NOTSET)
