"""The flood detector and ban table: limits, expiry and the bound on memory."""

from __future__ import annotations

import pytest

from callrouter.sip.pike import FloodLimit, Pike

STRICT = FloodLimit(16, 2.0)


def test_the_seventeenth_request_in_two_seconds_bans_for_the_ban_time() -> None:
    pike = Pike(ban_seconds=300.0)
    assert not any(pike.hit("203.0.113.9", STRICT, i * 0.1) for i in range(16))
    assert pike.hit("203.0.113.9", STRICT, 1.7)
    assert pike.bans == 1
    assert pike.banned("203.0.113.9", 1.8)
    assert pike.banned("203.0.113.9", 301.6)
    assert not pike.banned("203.0.113.9", 301.8)
    assert not pike.hit("203.0.113.9", STRICT, 302.0)  # starts afresh after the ban


def test_a_steady_source_under_the_limit_is_never_banned() -> None:
    pike = Pike(ban_seconds=300.0)
    # 7 requests a second for a minute: 14 per window, never 17.
    assert not any(pike.hit("192.0.2.1", STRICT, i / 7) for i in range(420))
    assert pike.bans == 0


def test_one_source_banned_leaves_the_others_alone() -> None:
    pike = Pike(ban_seconds=300.0)
    for i in range(20):
        pike.hit("203.0.113.9", STRICT, i * 0.01)
    assert pike.banned("203.0.113.9", 1.0)
    assert not pike.hit("192.0.2.1", STRICT, 1.0)
    assert not pike.banned("192.0.2.1", 1.0)


def test_the_tables_stay_bounded_under_a_spray_of_sources() -> None:
    pike = Pike(ban_seconds=300.0, max_sources=100)
    for i in range(10_000):
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        for _ in range(3):
            pike.hit(host, FloodLimit(2, 2.0), 0.0)
    assert pike.bans == 10_000
    assert pike.banned_count == 100
    assert len(pike._counts) <= 100


def test_a_limit_needs_a_request_and_a_window() -> None:
    with pytest.raises(ValueError):
        FloodLimit(0, 2.0)
    with pytest.raises(ValueError):
        FloodLimit(16, 0.0)
