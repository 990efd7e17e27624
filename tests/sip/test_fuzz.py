"""Bounded fuzzing in CI: the SIP parser, the SDP parser and the transaction layer behind the
transport. bench/fuzz_sip.py runs the same targets for longer."""

from __future__ import annotations

from hypothesis import given, settings

from callrouter.sip.events import Flow
from tests.sip import fuzz_targets
from tests.sip.fuzz_targets import VECTORS, exchanges, sdp_inputs, sip_inputs
from tests.sip.messages import invite


@settings(max_examples=500, deadline=None)
@given(sip_inputs)
def test_the_sip_parser_raises_only_its_own_error(data: bytes) -> None:
    fuzz_targets.parse_target(data)


@settings(max_examples=500, deadline=None)
@given(sdp_inputs)
def test_the_sdp_parser_raises_only_its_own_error(data: bytes) -> None:
    fuzz_targets.sdp_target(data)


@settings(max_examples=300, deadline=None)
@given(exchanges)
def test_nothing_escapes_the_transport_and_every_transaction_ends(
    exchange: list[tuple[bytes, Flow, float]],
) -> None:
    fuzz_targets.transport_target(exchange)


def test_the_transport_target_reaches_the_layer_above() -> None:
    """The target is not vacuous: a carrier's INVITE is handed up and answered (100, then 486
    retransmitted until Timer H, as nobody ACKs); a stranger's gets one 403 and goes no further."""
    carrier, stranger = fuzz_targets.SOURCES
    requests, sent = fuzz_targets.transport_target([(invite().to_bytes(), carrier, 0.0)])
    assert requests == 1 and sent > 2
    assert fuzz_targets.transport_target([(invite().to_bytes(), stranger, 0.0)]) == (0, 1)


def test_a_via_with_an_unterminated_quote_is_dropped_not_raised() -> None:
    """Found by bench/fuzz_sip.py: the 400 for a malformed request split its Via header, which
    raised, out of the transport."""
    data = (VECTORS / "fuzz" / "via-unterminated-quote.dat").read_bytes()
    carrier = fuzz_targets.SOURCES[0]
    assert fuzz_targets.transport_target([(data, carrier, 0.0)]) == (0, 0)
