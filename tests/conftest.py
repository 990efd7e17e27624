"""Shared test configuration."""

from hypothesis import HealthCheck, settings

# The machine has 2 shared cores: hypothesis deadlines would measure load, not correctness.
settings.register_profile(
    "callrouter", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("callrouter")
