"""Derived ids: the same for the same pair, ordered in time like the id they derive from."""

from __future__ import annotations

from uuid import uuid4

from callrouter.store.ids import derived_id, new_id


def test_a_derived_id_is_stable_distinct_per_pair_and_keeps_the_time_order() -> None:
    first, later = new_id(), new_id()
    hook, other_hook = uuid4(), uuid4()
    assert derived_id(first, hook) == derived_id(first, hook)
    assert derived_id(first, hook) != derived_id(first, other_hook)
    assert derived_id(first, hook) != derived_id(later, hook)
    assert derived_id(first, hook).int >> 64 == first.int >> 64  # version and time kept
    assert derived_id(first, other_hook) < derived_id(later, hook) or first.int >> 64 == (
        later.int >> 64
    )
    assert (derived_id(first, hook).version, derived_id(first, hook).variant) == (
        7,
        first.variant,
    )
