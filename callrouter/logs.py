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

import logging
import sys
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from callrouter.config import ConfigError, LogConfig

__all__ = ["configure", "parse_levels"]

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE = "%Y-%m-%dT%H:%M:%S"


def _utc(record: logging.LogRecord) -> str:
    """``2026-12-06T20:41:47.123Z``: UTC, milliseconds, whatever the host's time zone."""
    return f"{time.strftime(_DATE, time.gmtime(record.created))}.{int(record.msecs):03d}Z"


class _UtcText(logging.Formatter):
    """``2026-12-06T20:41:47.123Z INFO callrouter.app: ...``"""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)


class _UtcJson(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)


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
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(
            _UtcJson(
                ["asctime", "levelname", "name", "message"],
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(_UtcText(_TEXT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, component_level in levels.items():
        logging.getLogger(name).setLevel(component_level)
