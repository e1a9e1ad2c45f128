"""AggregateUsage on bounded input: one exact row per hour, user, model and model version,
whatever the batching. Expected rows come from ``tests/support/usage.py``."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from tests.support.aggregate import PRICES, T0_S, batched, ev, stamped
from tests.support.pipelines import TestPipeline
from tests.support.usage import comparable_usage, expected_usage
from transforms.usage import AggregateUsage

A1 = ev(T0_S + 1, event_id="a1", user_key="u1", latency_ms=100.0)
A2 = ev(
    T0_S + 1800,
    event_id="a2",
    user_key="u1",
    latency_ms=0.0,
    token_count=50,
    prompt_tokens=None,
    completion_tokens=None,
    policy_flags=("jailbreak_suspected", "pii_redacted"),
)
NO_VERSION = ev(T0_S + 30, event_id="a3", user_key="u1", model_version=None)
OTHER_USER = ev(T0_S + 40, event_id="b1", user_key="u2")
NEXT_HOUR = ev(T0_S + 3600, event_id="a4", user_key="u1")
UNPRICED = ev(T0_S + 50, event_id="c1", user_key="u1", model="gemini-2.5-flash")
EVENTS = [A1, A2, NO_VERSION, OTHER_USER, NEXT_HOUR, UNPRICED]


def _expected(source: str = "backfill") -> list:
    return [
        expected_usage(group, pane_timing="ON_TIME", pane_index=0, source=source)
        for group in ([A1, A2], [NO_VERSION], [OTHER_USER], [NEXT_HOUR], [UNPRICED])
    ]


def test_batch_usage_rows_are_exact_per_hour_user_and_model_version():
    with TestPipeline() as p:
        rows = p | beam.Create(EVENTS) | beam.Map(stamped) | AggregateUsage(PRICES)
        assert_that(rows | beam.Map(comparable_usage), equal_to(_expected()), label="CheckRows")


def test_batch_usage_rows_are_the_same_however_events_are_batched():
    with TestPipeline() as p:
        rows = (
            p | beam.Create([EVENTS[:3], EVENTS[3:]]) | beam.Map(batched) | AggregateUsage(PRICES)
        )
        assert_that(rows | beam.Map(comparable_usage), equal_to(_expected()), label="CheckRows")


def test_hand_computed_row():
    (row,) = [r for r in _expected() if r.request_count == 2]
    # A1 reported its split (200 + 100); A2 did not (50 unsplit, at the completion price).
    assert (row.token_sum, row.prompt_token_sum, row.unsplit_token_sum) == (350, 200, 50)
    assert row.policy_flagged_count == 1 and row.latency_ms_sum == 100.0
    assert row.estimated_cost_usd == (200 * 0.002 + (100 + 50) * 0.008) / 1000
    assert row.model_version == "001"
    assert next(r.model_version for r in _expected() if r.request_count == 1) == ""
