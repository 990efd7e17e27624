"""The bounded body decoder: depth, number literals and surrogates refused with the field named."""

from __future__ import annotations

import pytest

from callrouter.api.json_body import MAX_DEPTH, decode_body
from callrouter.api.problems import Problem


def refused(raw: bytes) -> Problem:
    with pytest.raises(Problem) as caught:
        decode_body(raw)
    return caught.value


def test_nesting_up_to_the_limit_is_accepted_and_one_deeper_is_400() -> None:
    assert decode_body(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    problem = refused(b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    assert (problem.status, problem.errors[0].field) == (400, "body")
    # Brackets inside strings are text, not nesting.
    text = b'["' + b"[" * 100 + b'", "\\"[[[[[["]'
    assert decode_body(text) == ["[" * 100, '"[[[[[[']


def test_unbalanced_brackets_are_malformed_not_deep() -> None:
    problem = refused(b"[" * 40 + b"}" * 40)
    assert problem.status == 400 and "malformed JSON" in problem.detail


def test_a_number_int_refuses_is_422_at_its_path() -> None:
    problem = refused(b'{"a": [1, ' + b"9" * 5000 + b"], " + b'"b": 2}')
    assert problem.status == 422
    assert [(e.field, e.reason) for e in problem.errors] == [
        ("a[1]", "number literal with over 40 digits in a row")
    ]


def test_lone_surrogates_are_422_and_pairs_are_characters() -> None:
    assert decode_body(b'{"s": "\\ud83d\\ude00"}') == {"s": "\U0001f600"}
    problem = refused(b'{"s": "\\ud800x", "t": {"\\udfff": "k"}, "u": ["ok", "\\uDBFF"]}')
    assert problem.status == 422
    assert [e.field for e in problem.errors] == ["s", "t", "u[1]"]
