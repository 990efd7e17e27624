"""Who may hold a SIP TCP/TLS connection: trunk sources only, within per-source and total limits."""

from __future__ import annotations

from callrouter.transport.stream import InboundConnections, StreamLimits


def test_unknown_sources_and_connections_over_the_limits_are_refused() -> None:
    inbound = InboundConnections(
        StreamLimits(max_connections=3, max_connections_per_source=2),
        known=lambda host: host.startswith("192.0.2."),
    )
    assert not inbound.admit("203.0.113.9")
    assert [inbound.admit("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert inbound.admit("192.0.2.2")
    assert not inbound.admit("192.0.2.3")  # three open in all
    inbound.release("192.0.2.1")
    assert inbound.admit("192.0.2.3")
    assert inbound.by_source == {"192.0.2.1": 1, "192.0.2.2": 1, "192.0.2.3": 1}
    assert inbound.refused == {"unknown source": 1, "per-source limit": 1, "connection limit": 1}
