"""Property tests: the parser only ever raises its own error, serialising is stable, no
transaction keeps a timer once it has terminated, and none holds its parsed request or
responses while it only waits out a timer (Completed, Accepted, Confirmed)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.sip.errors import LocalError, ParseError
from callrouter.sip.headers import canonical_name
from callrouter.sip.message import Request, parse_message
from callrouter.sip.transactions import (
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
    State,
    Timers,
)
from tests.sip.messages import answer, invite, options

CORPUS = [p.read_bytes() for p in sorted((Path(__file__).parent / "vectors").rglob("*.dat"))]
CORPUS += [invite().to_bytes(), options().to_bytes()]


JUNK = [b"\r\n", b":", b";", b",", b'"', b"<", b" ", b"\x00"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with bytes flipped, cut, duplicated or inserted."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 40))]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 40))]
        else:
            data[i:i] = draw(
                st.sampled_from([b"\r\n", b":", b";", b",", b'"', b"<", b" ", b"\x00"])
            )
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=600), mutated()))
def test_the_parser_raises_nothing_but_its_own_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError:
        return
    # What parsed serialises to bytes that parse to the same serialisation and the same fields
    # (each as received, since none changed), Content-Length aside: it follows the body.
    written = message.to_bytes()
    again = parse_message(written)
    assert again.to_bytes() == written
    assert [f for f in again.headers if canonical_name(f[0]) != "content-length"] == [
        f for f in message.headers if canonical_name(f[0]) != "content-length"
    ]


MACHINES = [ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite]
PEER_INPUTS = ["1xx", "2xx", "486", "retransmission", "ack"]
TU_INPUTS = ["send 180", "send 200", "send 486"]


@settings(max_examples=300, deadline=None)
@given(
    machine=st.sampled_from(MACHINES),
    reliable=st.booleans(),
    steps=st.lists(
        st.tuples(st.sampled_from(PEER_INPUTS + TU_INPUTS + ["tick"]), st.floats(0, 40)),
        max_size=12,
    ),
)
def test_transactions_never_keep_a_timer_after_terminating(
    machine: type, reliable: bool, steps: list[tuple[str, float]]
) -> None:
    request = invite() if machine in (ClientInvite, ServerInvite) else options()
    tx = machine("t", request, reliable, Timers())
    now = 0.0
    tx.start(now)
    for what, delay in steps:
        now += delay
        feed(tx, what, request, now)
        if tx.state is State.TERMINATED:
            assert tx.deadline is None
        if tx.state in (State.COMPLETED, State.ACCEPTED, State.CONFIRMED):
            assert tx.request is None and tx.last_response is None
    for _ in range(200):
        if tx.deadline is None:
            break
        tx.handle_timer(tx.deadline)
    # Server transactions wait for the layer above; client ones always end on their own.
    if machine in (ClientInvite, ClientNonInvite) or tx.state not in (
        State.TRYING,
        State.PROCEEDING,
    ):
        assert tx.state is State.TERMINATED
    if tx.state is State.TERMINATED:
        assert tx.deadline is None and tx.armed_timers == frozenset()


def feed(tx: object, what: str, request: object, now: float) -> None:
    assert isinstance(request, Request)
    status = {"1xx": 180, "2xx": 200, "486": 486}.get(what)
    if what == "tick":
        tx.handle_timer(now)  # type: ignore[attr-defined]
    elif status is not None and isinstance(tx, ClientInvite | ClientNonInvite):
        tx.receive_response(answer(request, status), now)
    elif what in ("retransmission", "ack") and isinstance(tx, ServerInvite | ServerNonInvite):
        incoming = Request("ACK" if what == "ack" else request.method, request.uri, request.headers)
        tx.receive_request(incoming, now)
    elif what.startswith("send") and isinstance(tx, ServerInvite | ServerNonInvite):
        # Responding twice is the layer above's misuse, refused loudly.
        with contextlib.suppress(LocalError):
            tx.respond(answer(request, int(what.split()[1])), now)
