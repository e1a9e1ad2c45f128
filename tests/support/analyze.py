"""The core composite's configuration in tests and views of its outputs."""

from __future__ import annotations

from apache_beam.testing.util import assert_that

from tests.support.core_inputs import PII_VALUES, T0_S
from transforms.analyze import CoreConfig

__all__ = ["CONFIG", "assert_no_pii", "metric_view"]


CONFIG = CoreConfig(window_size_s=60, allowed_lateness_s=300, early_firing_s=30, dedupe_shards=4)


def metric_view(row):
    return (
        row.window_start.timestamp() - T0_S,
        row.model,
        row.region,
        row.request_count,
        row.token_sum,
        row.pane_timing,
    )


def assert_no_pii(pcoll, label):
    def check(elements):
        text = repr(elements)
        leaked = [value for value in PII_VALUES if value in text]
        assert not leaked, f"{label}: PII leaked ({len(leaked)} values)"

    assert_that(pcoll, check, label=f"no PII in {label}")
