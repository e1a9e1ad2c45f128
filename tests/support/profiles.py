"""Hypothesis profiles of the fuzz tests, registered by ``tests/conftest.py`` (so that
``--hypothesis-profile`` can name them): ``suite``, the default, a small budget (what ``make
test`` runs: the fuzz tests together well under a minute), and ``fuzz`` (``make fuzz``: over
100,000 cases). A test takes its number of examples from ``examples(weight)``: the profile's
``max_examples`` times ``weight``, so one profile scales every fuzz test. Deadlines are off (the
machine is shared); failing examples are kept in ``.hypothesis/`` and replayed first."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

__all__ = ["FUZZ", "SUITE", "examples", "register_profiles"]

SUITE = "suite"
FUZZ = "fuzz"


def register_profiles() -> None:
    """Registers ``suite`` and ``fuzz`` and loads ``suite`` (``--hypothesis-profile`` wins)."""
    common = {
        "deadline": None,
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    }
    settings.register_profile(SUITE, max_examples=50, **common)
    settings.register_profile(FUZZ, max_examples=5_000, **common)
    settings.load_profile(SUITE)


def examples(weight: float, minimum: int = 2) -> int:
    """This test's number of examples: the loaded profile's ``max_examples`` times ``weight``."""
    return max(int(settings().max_examples * weight), minimum)
