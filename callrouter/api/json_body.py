"""Decoding a JSON request body with bounds the standard decoder does not have.

``json.loads`` on hostile input fails in ways that are not ``JSONDecodeError``: a 30,000-deep
array exhausts the recursion limit, a 5,000-digit number literal trips CPython's int-conversion
limit (CVE-2020-10735), and ``"\\ud800"`` decodes to a lone surrogate that cannot be encoded
again on the way to PostgreSQL. Each is refused here as a problem naming the body or the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from callrouter.api.problems import FieldError, Problem, invalid_fields

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "decode_body"]

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted; the API's own shapes nest at most 3 deep."""
MAX_DIGITS = 40
"""Once a body holds a number ``int()`` refuses (over 4,300 digits), every literal with more
digits in a row than this is named; shorter literals (room for any int64 or double written in
full) and bodies without such a number meet each field's own bounds instead."""

# Ordinary bodies take the C paths of ``re`` and ``json`` only; the Python-level walk that names
# a field happens for the rare body with a surrogate escape or a number ``int()`` refuses.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONG_RUN = re.compile(rf"[0-9]{{{MAX_DIGITS + 1}}}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Oversized:
    """A number literal too long to convert; reported later with the field it sits in."""


_OVERSIZED = _Oversized()


def _bounded_int(text: str) -> int | _Oversized:
    return _OVERSIZED if _LONG_RUN.search(text) else int(text)


def _bounded_float(text: str) -> float | _Oversized:
    return _OVERSIZED if _LONG_RUN.search(text) else float(text)


def decode_body(raw: bytes) -> Any:
    """The decoded body; a 400 problem for bytes that are not bounded JSON, a 422 naming the
    field for a lone surrogate or an over-long number."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not UTF-8") from None
    if _too_deep(text):
        raise Problem(
            400,
            f"body: nested deeper than {MAX_DEPTH} levels",
            [FieldError("body", f"nested deeper than {MAX_DEPTH} levels")],
        )
    try:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:
            # int() refused a literal (over 4,300 digits): decode again to find where it is.
            data = json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float)
            suspect = True
        else:
            suspect = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    except json.JSONDecodeError as exc:
        raise _malformed(str(exc)) from None
    if not suspect:
        return data
    errors: list[FieldError] = []
    _inspect(data, "", errors)
    if errors:
        raise invalid_fields(errors)
    return data


def _malformed(why: str) -> Problem:
    return Problem(400, f"body: malformed JSON: {why}", [FieldError("body", "malformed JSON")])


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # cannot be deeper: no scan for an ordinary body
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    # Each pass removes every innermost pair, so the passes needed are the nesting depth.
    for _ in range(MAX_DEPTH):
        reduced = _INNERMOST.sub("", brackets)
        if reduced == brackets:
            return False  # all matched, or unbalanced: json.loads says what is wrong
        brackets = reduced
    return bool(brackets)


def _inspect(value: Any, path: str, errors: list[FieldError]) -> None:
    """Collect over-long numbers and lone surrogates, by the path a schema would name."""
    where = path or "body"
    if value is _OVERSIZED:
        errors.append(FieldError(where, f"number literal with over {MAX_DIGITS} digits in a row"))
    elif isinstance(value, str):
        if _SURROGATE.search(value):
            errors.append(FieldError(where, "contains a lone UTF-16 surrogate"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _inspect(item, f"{path}[{index}]", errors)
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                errors.append(FieldError(where, "a key contains a lone UTF-16 surrogate"))
                continue
            _inspect(item, f"{path}.{key}" if path else key, errors)
