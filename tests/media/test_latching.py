"""Strict latching: who may send on a leg, and where that leg's media goes."""

from __future__ import annotations

from callrouter.media.latching import MediaLeg


def test_latches_once_to_the_signalled_ip_even_from_another_port() -> None:
    leg = MediaLeg(signalled=("192.0.2.10", 4000))
    assert leg.destination == ("192.0.2.10", 4000)
    assert leg.accept(("192.0.2.10", 40123))  # a NAT rewrote the port
    assert leg.destination == ("192.0.2.10", 40123)
    assert not leg.accept(("192.0.2.10", 4000))  # latched: only that exact source now
    assert leg.counters.rejected == 1


def test_rtp_injection_from_another_address_neither_is_heard_nor_hijacks() -> None:
    leg = MediaLeg(signalled=("192.0.2.10", 4000))
    assert not leg.accept(("198.51.100.66", 4000))
    assert leg.latched is None
    assert leg.destination == ("192.0.2.10", 4000)
    assert leg.accept(("192.0.2.10", 4000))
    assert not leg.accept(("198.51.100.66", 4000))
    assert leg.destination == ("192.0.2.10", 4000)


def test_a_natted_trunk_latches_to_the_first_source_whatever_its_ip() -> None:
    leg = MediaLeg(signalled=("10.0.0.5", 4000), nat=True)
    assert leg.accept(("203.0.113.9", 61000))
    assert leg.destination == ("203.0.113.9", 61000)
    assert not leg.accept(("203.0.113.66", 61000))


def test_a_new_signalled_address_reopens_latching_to_that_address_only() -> None:
    leg = MediaLeg(signalled=("192.0.2.10", 4000))
    assert leg.accept(("192.0.2.10", 4000))
    leg.signal(("192.0.2.20", 5000))
    assert leg.latched is None
    assert not leg.accept(("192.0.2.10", 4000))
    assert leg.accept(("192.0.2.20", 5000))
    leg.signal(("192.0.2.20", 5000))  # the same SDP again changes nothing
    assert leg.latched == ("192.0.2.20", 5000)


def test_hold_with_an_unspecified_address_sends_nowhere() -> None:
    leg = MediaLeg()
    assert leg.destination is None
    leg.signal(("0.0.0.0", 4000))
    assert leg.destination is None
    assert not leg.accept(("192.0.2.10", 4000))
