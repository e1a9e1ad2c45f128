"""AggregateMetrics on bounded input: exact rows per window and key, a configurable window,
the same rows however the events are batched. Expected rows come from
``tests/support/aggregate.py``, computed independently of ``transforms.sketches``."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from tests.support.aggregate import (
    E1,
    E2,
    E3,
    E4_NEXT_WINDOW,
    E5_OTHER_REGION,
    MAPPING,
    PRICES,
    T0_S,
    ZERO_INDEX,
    batched,
    bucket_value,
    comparable,
    ev,
    expected_row,
    stamped,
    utc,
)
from tests.support.pipelines import TestPipeline
from transforms.aggregate import AggregateMetrics
from transforms.elements import IngestionBin, LatencyBin, MetricRow


def test_batch_rows_are_exact_per_window_and_key():
    started = dt.datetime.now(dt.UTC)
    with TestPipeline() as p:
        rows = (
            p
            | beam.Create([E1, E2, E3, E4_NEXT_WINDOW, E5_OTHER_REGION])
            | beam.Map(stamped)
            | AggregateMetrics(prices=PRICES)
        ).rows
        # Spelled out by hand for the first window, so the reference builder is checked too.
        first_window = MetricRow(
            window_start=utc(T0_S),
            window_end=utc(T0_S + 60),
            model="gemini-2.5-pro",
            region="europe-west1",
            request_count=3,
            token_sum=360,
            prompt_token_sum=204,
            completion_token_sum=106,
            # DDSketch ranks: q*(n-1) rounded down, so with 3 values p50, p95 and p99 are
            # all the middle one (rank 1, 1.9 and 1.98).
            latency_p50_ms=bucket_value(100.0),
            latency_p95_ms=bucket_value(100.0),
            latency_p99_ms=bucket_value(100.0),
            latency_sketch_bins=(
                LatencyBin(ZERO_INDEX, 1),
                LatencyBin(MAPPING.key(100.0), 1),
                LatencyBin(MAPPING.key(2000.0), 1),
            ),
            latency_sketch_relative_accuracy=0.01,
            distinct_users_approx=2,
            users_hll=(12, 2),
            policy_flag_counts={"pii_redacted": 2, "blocked_topic": 1},
            data_class_counts={"INTERNAL": 1, "PUBLIC": 1, "RESTRICTED": 1},
            redaction_counts={"EMAIL_ADDRESS": 3, "PHONE_NUMBER": 3},
            pane_timing="ON_TIME",
            pane_index=0,
            is_final=False,
            emitted_at=None,
            source="backfill",  # bounded input
            unsplit_token_sum=50,  # E2 reported no split
            # (204 * 0.002 + (106 + 50) * 0.008) / 1000
            estimated_cost_usd=0.001656,
            price_table_version="test-1",
            latest_event_time=E3.event_time,  # the newest of the three: 59.999 s in
            # E1 and E3 were ingested in the same second; E2's ingestion time is unknown.
            ingestion_counts=(IngestionBin(T0_S + 62, 2),),
        )
        assert first_window == expected_row(
            [E1, E2, E3], pane_timing="ON_TIME", pane_index=0, source="backfill"
        )
        assert_that(
            rows | "Comparable" >> beam.Map(comparable),
            equal_to(
                [
                    first_window,
                    expected_row(
                        [E4_NEXT_WINDOW], pane_timing="ON_TIME", pane_index=0, source="backfill"
                    ),
                    expected_row(
                        [E5_OTHER_REGION], pane_timing="ON_TIME", pane_index=0, source="backfill"
                    ),
                ]
            ),
            label="CheckRows",
        )

        def check_emitted_at(actual):
            for row in actual:
                if row.emitted_at.utcoffset() != dt.timedelta(0):
                    raise BeamAssertException(f"emitted_at not UTC: {row.emitted_at!r}")
                if not started <= row.emitted_at <= dt.datetime.now(dt.UTC):
                    raise BeamAssertException(f"emitted_at not run time: {row.emitted_at!r}")

        assert_that(rows, check_emitted_at, label="CheckEmittedAt")


def test_batch_window_size_is_configurable():
    events = [ev(T0_S + s, event_id=f"e{s}", user_key=f"u{s % 7}") for s in range(0, 3600, 90)]
    with TestPipeline() as p:
        rows = (
            p
            | beam.Create(events)
            | beam.Map(stamped)
            | AggregateMetrics(window_size_s=3600, prices=PRICES)
        ).rows
        expected = expected_row(
            events, pane_timing="ON_TIME", pane_index=0, window_s=3600, source="backfill"
        )
        assert_that(
            rows | "Comparable" >> beam.Map(comparable),
            equal_to([expected]),
            label="CheckOneHourlyRow",
        )


def test_batch_rows_are_the_same_however_events_are_batched():
    events = [E1, E2, E3, E4_NEXT_WINDOW, E5_OTHER_REGION]
    with TestPipeline() as p:
        one = (
            p
            | "One" >> beam.Create([batched(events)])
            | "AggOne" >> AggregateMetrics(prices=PRICES)
        ).rows
        each = (
            p
            | "Each" >> beam.Create(events)
            | beam.Map(stamped)
            | "AggEach" >> AggregateMetrics(prices=PRICES)
        ).rows
        expected = [
            expected_row([E1, E2, E3], pane_timing="ON_TIME", pane_index=0, source="backfill"),
            expected_row([E4_NEXT_WINDOW], pane_timing="ON_TIME", pane_index=0, source="backfill"),
            expected_row([E5_OTHER_REGION], pane_timing="ON_TIME", pane_index=0, source="backfill"),
        ]
        assert_that(one | "C1" >> beam.Map(comparable), equal_to(expected), label="one batch")
        assert_that(each | "C2" >> beam.Map(comparable), equal_to(expected), label="per event")


def test_counters_for_cloud_monitoring():
    """The counters the dashboard and alerts read (namespace genai), per bundle: requests,
    tokens, cost in µUSD, requests per policy flag and the cumulative latency histogram."""
    from apache_beam.metrics.metric import MetricsFilter

    p = TestPipeline()
    _ = (
        p
        | beam.Create([E1, E2, E3, E4_NEXT_WINDOW, E5_OTHER_REGION])
        | beam.Map(stamped)
        | AggregateMetrics(prices=PRICES)
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("genai"))["counters"]
    }
    events = [E1, E2, E3, E4_NEXT_WINDOW, E5_OTHER_REGION]
    assert counters["requests_aggregated"] == 5
    assert counters["tokens"] == sum(e.token_count for e in events)
    assert counters["prompt_tokens"] == sum(e.prompt_tokens or 0 for e in events)
    # gemini-2.5-pro is priced: the three windows' costs, in µUSD, add up per bundle.
    window_costs = [
        expected_row(group, pane_timing="ON_TIME", pane_index=0).estimated_cost_usd
        for group in ([E1, E2, E3], [E4_NEXT_WINDOW], [E5_OTHER_REGION])
    ]
    assert counters["estimated_cost_micro_usd"] == round(sum(window_costs) * 1_000_000)
    assert counters["policy_flag.pii_redacted"] == 2  # E1 (twice in one request) and E3
    assert counters["policy_flag.blocked_topic"] == 1
    model = E1.model
    # Cumulative, each sketch bucket placed by the value it stands for (within 1% above the
    # latency): 0 ms (E2) and 40 ms (40.05) under 100; 100 ms (100.49) and 250 ms (252.18) under
    # 500; 2000 ms (2018.69) under 5000.
    assert counters[f"latency_ms_bucket.{model}.100"] == 2
    assert counters[f"latency_ms_bucket.{model}.250"] == 3
    assert counters[f"latency_ms_bucket.{model}.500"] == 4
    assert counters[f"latency_ms_bucket.{model}.2000"] == 4
    assert counters[f"latency_ms_bucket.{model}.5000"] == 5
    assert counters[f"latency_ms_bucket.{model}.+Inf"] == 5
