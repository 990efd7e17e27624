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


def test_exhaustion_reuses_the_oldest_release_or_gives_the_default_number() -> None:
    reuse, default = pool(), pool(policy="default_number")
    for p in (reuse, default):
        sessions = [uuid4() for _ in NUMBERS]
        for s in sessions:
            p.lease(s, None, 0.0)
        p.heartbeat(sessions[1], 50.0)  # lives until 110
        p.end(sessions[2], 0.0)  # released at 60
        p.end(sessions[0], 5.0)  # released at 65
        p.expire(70.0)
    got = reuse.lease(uuid4(), None, 70.0)  # both free numbers still in grace
    assert got is not None and got.number == NUMBERS[2] and reuse.exhaustions == 1
    assert default.lease(uuid4(), None, 70.0) is None and default.exhaustions == 1
    # Nothing free at all: even reuse_oldest has to show the default number.
    reuse.lease(uuid4(), None, 70.0)
    assert reuse.lease(uuid4(), None, 70.0) is None and reuse.exhaustions == 3
    stats = reuse.stats(70.0)
    assert (stats.size, stats.leased, stats.peak) == (3, 3, 3)
    assert stats.recommended_size == 5  # 3 leases + 1 turned away, plus a quarter


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
