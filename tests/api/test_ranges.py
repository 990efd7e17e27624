"""HTTP Range for recording downloads (RFC 9110 §14): one range, or the whole file."""

from __future__ import annotations

import pytest

from callrouter.api.problems import Problem
from callrouter.api.recordings import byte_range


def test_single_ranges_are_honoured() -> None:
    assert byte_range(None, 1000) is None
    assert byte_range("bytes=0-99", 1000) == (0, 100)
    assert byte_range("bytes=900-", 1000) == (900, 1000)
    assert byte_range("bytes=-100", 1000) == (900, 1000)
    assert byte_range("bytes=-5000", 1000) == (0, 1000)
    assert byte_range("bytes=990-5000", 1000) == (990, 1000)


def test_what_we_do_not_serve_as_a_range_gets_the_whole_file() -> None:
    assert byte_range("bytes=0-1,5-9", 1000) is None
    assert byte_range("items=0-1", 1000) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0", "bytes=-"])
def test_unsatisfiable_ranges_get_416_with_the_size(header: str) -> None:
    with pytest.raises(Problem) as raised:
        byte_range(header, 1000)
    assert raised.value.status == 416
    assert raised.value.headers["Content-Range"] == "bytes */1000"
