"""One logging path for the server: stdlib logging, as text or one JSON object per line.

Every line carries a UTC timestamp, the level and the logger's name. Code that reports an event
a machine should read (a finished call, an HTTP request, a refused key) logs it with
``extra={"event": ..., ...}``: the JSON format writes those fields as keys, so tools (and the
end-to-end tests) read events without parsing prose; the text format shows the message only.

Personal data stays out: callers' numbers are never put in ``extra`` (a suppressed caller's
number is not even in the call's memory), and the HTTP access log names the key id, never the
key or a body.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from typing import Any, TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

from callrouter.config import ConfigError, LogConfig

__all__ = ["configure", "info_event", "parse_levels"]

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE = "%Y-%m-%dT%H:%M:%S"


def _utc(record: logging.LogRecord) -> str:
    """``2026-12-06T20:41:47.123Z``: UTC, milliseconds, whatever the host's time zone."""
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


def _utc_at(created: float) -> str:
    """``_utc`` of a record made at ``created`` (its milliseconds as LogRecord takes them)."""
    seconds = int(created)
    return f"{_second(seconds)}.{int((created - seconds) * 1000):03d}Z"


@functools.lru_cache(maxsize=2)
def _second(seconds: int) -> str:
    """A second's text, written once for all the lines logged in it."""
    return time.strftime(_DATE, time.gmtime(seconds))


class _UtcText(logging.Formatter):
    """``2026-12-06T20:41:47.123Z INFO callrouter.app: ...``"""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)

    def event_line(self, name: str, created: float, message: str, fields: dict[str, Any]) -> str:
        """The line ``format`` writes for an INFO record of ``name`` with these extra fields."""
        return f"{_utc_at(created)} INFO {name}: {message}"


class _UtcJson(OrjsonFormatter):
    """One JSON object a line, encoded by orjson: half of the formatter's time went to
    json's encoder on the access log's line per request."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)

    def event_line(self, name: str, created: float, message: str, fields: dict[str, Any]) -> str:
        """The line ``format`` writes for an INFO record of ``name`` with these extra fields
        (``tests/test_logs.py`` holds the two to the same text)."""
        return self.jsonify_log_record(
            {
                "time": _utc_at(created),
                "level": "INFO",
                "logger": name,
                "message": message,
                **fields,
            }
        )


class _LoopTurnHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the lines an event-loop turn logged in one write.

    Under load the access log is a line per request, and a write (with its flush, a system call
    on a pipe or journald's socket) per line cost a quarter of the HTTP stack's time. Lines
    logged on the loop wait only until the loop's ready callbacks are done, never for a timer;
    a warning or worse, and a line logged off the loop (a thread, before the loop runs, at
    exit), is written at once, after the lines waiting, so the order stays the logged order.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            self.flush()  # the lines waiting go first
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - as logging's own handlers: reported, never raised
            self.handleError(record)
            return
        self._wait(line, loop)

    def emit_line(self, line: str) -> None:
        """An INFO line already formatted, written as ``emit`` writes a record's."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                self.flush()
                self.stream.write(line + self.terminator)
                self.flush()
            return
        self._wait(line, loop)

    def _wait(self, line: str, loop: asyncio.AbstractEventLoop) -> None:
        if not self._waiting:
            loop.call_soon(self.flush)
        self._waiting.append(line + self.terminator)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            if self._waiting:
                lines, self._waiting = "".join(self._waiting), []
                self.stream.write(lines)
            super().flush()


def info_event(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """``logger.info(message, extra=fields)``: the same line, for an event logged per request.

    Making a LogRecord and formatting it generically cost a fifth of a swap-script heartbeat's
    CPU (95 vs 72 µs with the access log turned off, ``bench/sessions.py``). When the line can
    reach only this module's handler (no other handler, no filter on the way), that handler's
    formatter writes it from the fields directly; otherwise (a test's capturing handler, a
    filter) the record is made and handled as usual.

    :param message: the message, already formatted (it is not %-formatted again).
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_handler(logger)
    formatter = handler.formatter if handler is not None else None
    if handler is None or not isinstance(formatter, _UtcJson | _UtcText):
        logger.info(message, extra=fields)
        return
    handler.emit_line(formatter.event_line(logger.name, time.time(), message, fields))


def _sole_handler(logger: logging.Logger) -> _LoopTurnHandler | None:
    """This module's handler when it is the one handler a record of ``logger`` reaches, with
    no filter on the way and a level that lets INFO through."""
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        if node.handlers:
            if node is not logging.root or len(node.handlers) != 1:
                return None
            handler = node.handlers[0]
            if type(handler) is not _LoopTurnHandler or handler.filters:
                return None
            return handler if handler.level <= logging.INFO else None
        if not node.propagate:
            return None
        node = node.parent
    return None


def _level(text: str, where: str) -> int:
    value = logging.getLevelName(text.strip().upper())
    if not isinstance(value, int):
        raise ConfigError(f"{where}: {text.strip()!r} is not a level (debug, info, warning, error)")
    return value


def parse_levels(text: str) -> dict[str, int]:
    """``"callrouter.sip=debug, aiohttp=warning"`` -> {logger name: level}."""
    levels: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, level = item.partition("=")
        if not equals or not name.strip():
            raise ConfigError(f"log.levels: {item.strip()!r} is not logger=level")
        levels[name.strip()] = _level(level, f"log.levels: {name.strip()}")
    return levels


def configure(settings: LogConfig, stream: TextIO | None = None) -> None:
    """Send every logger's records through one handler in the configured format.

    :raises ConfigError: naming the setting that is wrong.
    """
    if settings.format not in FORMATS:
        raise ConfigError(f"log.format: {settings.format!r} is not text or json")
    level = _level(settings.level, "log.level")
    levels = parse_levels(settings.levels)
    handler = _LoopTurnHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(
            _UtcJson(
                ["asctime", "levelname", "name", "message"],
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_UtcText(_TEXT))
    # Neither format shows the caller's file, line, thread or process: not looking them up
    # (logging's own advice, "Optimization" in its HOWTO) takes a third off each record's
    # making, which the access log pays once per request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, component_level in levels.items():
        logging.getLogger(name).setLevel(component_level)
