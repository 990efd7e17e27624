"""The hot pool: exclusivity, reuse order, expiry and grace with a fake clock."""

from __future__ import annotations

from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.routing.pool import NumberPool

NUMBERS = [f"+4415155500{i:02d}" for i in range(3)]


def pool(**options: object) -> NumberPool:
    return NumberPool(list(NUMBERS), hold=60.0, grace=300.0, **options)  # type: ignore[arg-type]


def test_a_visitor_keeps_their_number_while_the_lease_lives() -> None:
    p = pool()
    first = p.lease(uuid4(), "visitor-1", 0.0)
    assert first is not None
    again = p.lease(uuid4(), "visitor-1", 30.0)
    assert again is first and again.number == first.number
    other = p.lease(uuid4(), "visitor-2", 31.0)
    assert other is not None and other.number != first.number


def test_heartbeats_keep_a_lease_and_its_hold_outlives_the_page() -> None:
    p = pool()
    session = uuid4()
    lease = p.lease(session, None, 0.0)
    assert lease is not None
    assert p.heartbeat(session, 50.0) is lease
    p.end(session, 100.0)
    assert p.holder(lease.number, 159.0) is lease  # still held: hold runs from the page close
    assert p.heartbeat(session, 161.0) is None  # expired at 160
    assert p.session(session, 161.0) is None
    assert p.holder(lease.number, 161.0) is lease  # but a late call still finds the visit
    assert p.holder(lease.number, 461.0) is None  # ... until its grace ends


def test_released_numbers_are_reused_longest_released_first_out_of_grace_first() -> None:
    p = pool()
    sessions = [uuid4() for _ in NUMBERS]
    leases = [p.lease(s, None, float(i)) for i, s in enumerate(sessions)]
    assert [lease.number for lease in leases if lease] == NUMBERS
    p.end(sessions[1], 10.0)  # released at 70
    p.end(sessions[0], 20.0)  # released at 80
    p.end(sessions[2], 30.0)  # released at 90
    # At 400 the first two are out of grace (370, 380 < 400); the oldest release wins.
    assert (p.lease(uuid4(), None, 400.0) or leases[0]).number == NUMBERS[1]
    assert (p.lease(uuid4(), None, 400.0) or leases[0]).number == NUMBERS[0]
    # Only NUMBERS[2] is free, still in grace until 390+... it was released at 90: out at 390.
    assert (p.lease(uuid4(), None, 400.0) or leases[0]).number == NUMBERS[2]
    assert p.exhaustions == 0


def exhausted(policy: str) -> tuple[NumberPool, list[UUID]]:
    """Three sessions at 0; one heartbeat at 50 (lives until 110); two pages closed at 0 and 5
    (released at 60 and 65, both still in grace at 70)."""
    p = pool(policy=policy)
    sessions = [uuid4() for _ in NUMBERS]
    for s in sessions:
        p.lease(s, None, 0.0)
    p.heartbeat(sessions[1], 50.0)
    p.end(sessions[2], 0.0)
    p.end(sessions[0], 5.0)
    p.expire(70.0)
    return p, sessions


def test_reuse_oldest_takes_the_number_released_longest_ago_even_in_its_grace() -> None:
    p, _ = exhausted("reuse_oldest")
    got = p.lease(uuid4(), None, 70.0)
    assert got is not None and got.number == NUMBERS[2] and p.exhaustions == 1
    got = p.lease(uuid4(), None, 70.0)
    assert got is not None and got.number == NUMBERS[0] and p.exhaustions == 2
    assert p.revoked() == []  # nobody lost a live lease


def test_reuse_oldest_with_nothing_released_takes_the_lease_idle_longest() -> None:
    p = pool()
    sessions = [uuid4() for _ in NUMBERS]
    leases = [p.lease(s, None, float(i)) for i, s in enumerate(sessions)]
    p.heartbeat(sessions[0], 20.0)  # session 1 (leased at 1) is now the one idle longest
    p.heartbeat(sessions[2], 21.0)
    newcomer = uuid4()
    got = p.lease(newcomer, None, 30.0)
    assert leases[1] is not None and got is not None
    assert got.number == leases[1].number and p.exhaustions == 1
    assert p.session(sessions[1], 30.0) is None  # the idle page lost its number...
    assert p.heartbeat(sessions[1], 31.0) is None
    assert p.holder(got.number, 31.0) is got  # ...and calls to it reach the newcomer
    (taken,) = p.revoked()
    assert taken.session_id == sessions[1] and taken.expires_at == 30.0
    stats = p.stats(30.0)
    assert (stats.leased, stats.peak, stats.recommended_size) == (3, 3, 5)


def test_default_number_policy_gives_no_lease_when_exhausted() -> None:
    p, sessions = exhausted("default_number")
    assert p.lease(uuid4(), None, 70.0) is None and p.exhaustions == 1
    assert p.session(sessions[1], 70.0) is not None  # nobody's lease is taken
    stats = p.stats(70.0)
    assert (stats.size, stats.leased, stats.peak) == (3, 1, 3)
    assert stats.recommended_size == 4  # the peak of 3, plus a quarter


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["lease", "heartbeat", "end", "tick"]),
            st.integers(0, 7),  # which session / visitor
            st.floats(0, 200),
        ),
        max_size=60,
    ),
    st.sampled_from(["reuse_oldest", "default_number"]),
)
def test_no_number_is_ever_leased_to_two_live_sessions(
    steps: list[tuple[str, int, float]], policy: str
) -> None:
    p = pool(policy=policy)
    sessions: dict[int, UUID] = {}
    now = 0.0
    for action, who, delay in steps:
        now += delay
        if action == "lease":
            sessions[who] = uuid4()
            p.lease(sessions[who], f"visitor-{who % 4}", now)
        elif action == "heartbeat" and who in sessions:
            p.heartbeat(sessions[who], now)
        elif action == "end" and who in sessions:
            p.end(sessions[who], now)
        else:
            p.expire(now)
        live = {n: p.holder(n, now) for n in NUMBERS}
        holders = [lease.session_id for lease in live.values() if lease and lease.expires_at > now]
        assert len(holders) == len(set(holders))
        numbers_of_live = [
            lease.number for lease in live.values() if lease and lease.expires_at > now
        ]
        assert len(numbers_of_live) == len(set(numbers_of_live))
        for lease in (p.session(s, now) for s in sessions.values()):
            if lease is not None:
                assert p.holder(lease.number, now) is lease
