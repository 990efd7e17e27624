"""Session-Expires and Min-SE (RFC 4028 §4, §5) read from the wire, and the INVITEs screening
refuses for them: 400 naming an unreadable header, 422 with our Min-SE for a too-small
interval from a caller that supports timers, nothing for one that cannot take a 422."""

from __future__ import annotations

import pytest

from callrouter.sip.errors import RemoteError
from callrouter.sip.screening import Capabilities, screen
from callrouter.sip.session_timer import (
    SessionExpires,
    bye_before,
    min_se,
    session_expires,
    supports_timer,
)

from .messages import invite

TIMERS = Capabilities(extensions=("timer",))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("90;refresher=uac", SessionExpires(90, "uac")),
        ("4000 ; REFRESHER = UAS ; x=y", SessionExpires(4000, "uas")),
        ("600;refresher=nobody", SessionExpires(600)),
    ],
)
def test_session_expires_is_read_with_its_refresher(value: str, expected: SessionExpires) -> None:
    request = invite()
    request.headers.add("Session-Expires", value)
    assert session_expires(request) == expected


def test_the_compact_form_reads_the_same() -> None:
    request = invite()
    request.headers.add("x", "300;refresher=uas")
    assert session_expires(request) == SessionExpires(300, "uas")
    assert str(SessionExpires(300, "uas")) == "300;refresher=uas"


@pytest.mark.parametrize("value", ["", "abc", "-90", "1e3", "٣٠٠", "99999999999"])
def test_an_unreadable_interval_is_the_peers_error(value: str) -> None:
    request = invite()
    request.headers.add("Session-Expires", value)
    request.headers.add("Min-SE", value)
    with pytest.raises(RemoteError, match="Bad Session-Expires") as excinfo:
        session_expires(request)
    assert excinfo.value.status == 400
    with pytest.raises(RemoteError, match="Bad Min-SE"):
        min_se(request)


def test_support_is_said_in_supported_or_require() -> None:
    assert supports_timer(invite().headers) is False
    request = invite()
    request.headers.add("Supported", "100rel, Timer")
    assert supports_timer(request.headers)
    required = invite()
    required.headers.add("Require", "timer")
    assert supports_timer(required.headers)


def test_the_bye_leaves_before_the_session_expires() -> None:
    """RFC 4028 §10: by the smaller of 32 s and a third of the interval."""
    assert bye_before(90) == 60
    assert bye_before(1800) == 1768


def test_a_too_small_interval_from_a_caller_with_timers_gets_422_and_our_min_se() -> None:
    request = invite()
    request.headers.add("Supported", "timer")
    request.headers.add("Session-Expires", "60")
    refusal = screen(request, TIMERS, "t")
    assert refusal is not None and refusal.status == 422
    assert refusal.reason == "Session Interval Too Small"
    assert refusal.headers.get("Min-SE") == "90"


def test_a_too_small_interval_from_a_caller_without_timers_passes() -> None:
    """It cannot act on a 422 (a proxy put the header there): the interval is raised on the way
    out instead (routing/session_timers.py)."""
    request = invite()
    request.headers.add("Session-Expires", "60")
    assert screen(request, TIMERS, "t") is None


def test_an_unreadable_session_expires_gets_400_naming_it() -> None:
    request = invite()
    request.headers.add("Session-Expires", "soon")
    refusal = screen(request, TIMERS, "t")
    assert refusal is not None and (refusal.status, refusal.reason) == (400, "Bad Session-Expires")


def test_require_timer_is_accepted_where_timers_are_supported() -> None:
    request = invite()
    request.headers.add("Require", "timer")
    request.headers.add("Session-Expires", "1800")
    assert screen(request, TIMERS, "t") is None
    refusal = screen(request, Capabilities(), "t")
    assert refusal is not None and refusal.status == 420
