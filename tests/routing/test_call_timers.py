"""The calls' timers on one reactor timer (routing/call_timers.py), on Twisted's fake clock:
each fires once at its deadline, in order, cancelled and re-armed ones as the B2BUA expects,
and an armed timer costs the collector one object, a cancelled one none for long."""

from __future__ import annotations

import gc
import uuid

from twisted.internet.task import Clock

from callrouter.routing.call import TimerKey
from callrouter.routing.call_timers import CallTimers


def key(kind: str, call: int = 1) -> TimerKey:
    return TimerKey(uuid.UUID(int=call), kind)


def timers(clock: Clock) -> tuple[CallTimers, list[tuple[float, str]]]:
    fired: list[tuple[float, str]] = []
    made = CallTimers(clock, lambda k: fired.append((clock.seconds(), k.kind)))
    return made, fired


def test_timers_fire_once_each_at_their_deadline_in_order_on_one_reactor_timer() -> None:
    clock = Clock()
    clock.advance(0.1)  # deadlines that are not whole numbers
    calls, fired = timers(clock)
    calls.start(key("ceiling"), 14400.0)
    calls.start(key("keepalive"), 60.0)
    calls.start(key("answer"), 0.5)
    assert len(clock.getDelayedCalls()) == 1 and len(calls) == 3
    clock.advance(0.5)
    assert fired == [(0.6, "answer")]
    clock.pump([59.5, 14340.0])
    assert [kind for _, kind in fired] == ["answer", "keepalive", "ceiling"]
    assert clock.getDelayedCalls() == [] and len(calls) == 0


def test_a_cancelled_timer_never_fires_and_a_rearmed_one_fires_at_its_new_deadline() -> None:
    clock = Clock()
    calls, fired = timers(clock)
    calls.start(key("session"), 10.0)
    calls.start(key("keepalive"), 60.0)
    calls.cancel(key("session"))
    calls.cancel(key("never armed"))
    calls.start(key("keepalive"), 5.0)  # earlier: the reactor timer moves up
    clock.advance(5.0)
    assert fired == [(5.0, "keepalive")]
    calls.start(key("keepalive"), 60.0)
    clock.advance(30.0)
    calls.start(key("keepalive"), 60.0)  # later: the old deadline passes quietly
    clock.pump([30.0, 30.0])
    assert fired == [(5.0, "keepalive"), (95.0, "keepalive")]
    assert clock.getDelayedCalls() == []


def test_a_timers_handler_may_arm_and_cancel_timers() -> None:
    clock = Clock()
    fired: list[str] = []

    def fire(due: TimerKey) -> None:
        fired.append(due.kind)
        if due.kind == "answer":
            calls.start(key("answer"), 1.0)  # the next repetition
            calls.cancel(key("ring"))  # due at the same instant: not fired
            calls.start(key("now"), 0.0)

    calls = CallTimers(clock, fire)
    calls.start(key("answer"), 0.5)
    calls.start(key("ring"), 0.5)
    clock.advance(0.5)
    assert fired == ["answer", "now"]
    clock.advance(1.0)
    assert fired == ["answer", "now", "answer", "now"]


def test_an_armed_timer_costs_the_collector_one_object_and_cancelled_ones_do_not_stay() -> None:
    clock = Clock()
    calls, _ = timers(clock)
    keys = [key(kind, n) for n in range(1000) for kind in ("ceiling", "keepalive")]
    gc.collect()
    before = len(gc.get_objects())
    for k in keys:
        calls.start(k, 14400.0 if k.kind == "ceiling" else 60.0)
    gc.collect()
    assert len(gc.get_objects()) - before <= len(keys) + 10  # a tuple each, then the heap
    for k in keys[:-2]:  # every call but the last ends: its four-hour ceiling is cancelled
        calls.cancel(k)
    gc.collect()
    assert len(gc.get_objects()) - before <= 10
    assert len(calls) == 2 and len(clock.getDelayedCalls()) == 1
