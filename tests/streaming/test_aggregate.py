"""AggregateMetrics on unbounded input (TestStream): on-time, early and late panes,
accumulating; events beyond the allowed lateness in no pane; windows and keys fired
separately, also out of one batch. Expected rows come from ``tests/support/aggregate.py``."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from tests.support.aggregate import PRICES, T0_S, batched, comparable, ev, expected_row, stamped
from tests.support.pipelines import TestPipeline, streaming_options
from transforms.aggregate import AggregateMetrics
from transforms.elements import MetricRow


def run_stream(stream: TestStream, expected: list[MetricRow], **aggregate_kwargs) -> None:
    with TestPipeline(options=streaming_options()) as p:
        rows = (p | stream | AggregateMetrics(prices=PRICES, **aggregate_kwargs)).rows
        assert_that(
            rows | "Comparable" >> beam.Map(comparable), equal_to(expected), label="CheckPanes"
        )


def test_stream_on_time_pane():
    a, b = ev(T0_S + 5, event_id="a", user_key="u1"), ev(T0_S + 40, event_id="b", user_key="u2")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a), stamped(b)])
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to_infinity()
    )
    run_stream(stream, [expected_row([a, b], pane_timing="ON_TIME", pane_index=0)])


def test_stream_early_panes_then_on_time_pane_accumulate():
    a = ev(T0_S + 5, event_id="a", user_key="u1", latency_ms=80.0)
    b = ev(T0_S + 20, event_id="b", user_key="u2", latency_ms=900.0, data_class="RESTRICTED")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a)])
        .advance_processing_time(31)  # past early_firing_s=30 after the first element
        .add_elements([stamped(b)])
        .advance_processing_time(31)
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [
            expected_row([a], pane_timing="EARLY", pane_index=0),
            expected_row([a, b], pane_timing="EARLY", pane_index=1),
            expected_row([a, b], pane_timing="ON_TIME", pane_index=2),
        ],
    )


def test_stream_no_early_pane_before_early_firing_s():
    a = ev(T0_S + 5, event_id="a")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a)])
        .advance_processing_time(29)
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to_infinity()
    )
    run_stream(stream, [expected_row([a], pane_timing="ON_TIME", pane_index=0)])


def test_stream_late_events_within_lateness_give_accumulated_late_panes():
    on_time = ev(T0_S + 5, event_id="a", user_key="u1", latency_ms=100.0)
    late_1 = ev(
        T0_S + 20,
        event_id="b",
        user_key="u2",
        latency_ms=3000.0,
        policy_flags=("blocked_topic",),
        redaction_counts={"PHONE_NUMBER": 1},
    )
    late_2 = ev(T0_S + 59, event_id="c", user_key="u1", latency_ms=0.0, prompt_tokens=None)
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(on_time)])
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to(T0_S + 60 + 1800)  # 30 min late: within allowed_lateness_s
        .add_elements([stamped(late_1)])
        .advance_watermark_to(T0_S + 60 + 3599)
        .add_elements([stamped(late_2)])
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [
            expected_row([on_time], pane_timing="ON_TIME", pane_index=0),
            expected_row([on_time, late_1], pane_timing="LATE", pane_index=1),
            expected_row([on_time, late_1, late_2], pane_timing="LATE", pane_index=2),
        ],
        allowed_lateness_s=3600,
    )


def test_stream_events_beyond_allowed_lateness_are_in_no_pane():
    on_time = ev(T0_S + 5, event_id="a")
    too_late = ev(T0_S + 20, event_id="b", token_count=999_999)
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(on_time)])
        .advance_watermark_to(T0_S + 60 + 600 + 1)  # window end + allowed lateness, passed
        .add_elements([stamped(too_late)])
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [expected_row([on_time], pane_timing="ON_TIME", pane_index=0)],
        allowed_lateness_s=600,
    )


def test_stream_two_windows_fire_separately():
    first = ev(T0_S + 59, event_id="a", user_key="u1")
    second = [ev(T0_S + 60, event_id="b", user_key="u2"), ev(T0_S + 61, event_id="c")]
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(first), *map(stamped, second)])
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to(T0_S + 120)
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [
            expected_row([first], pane_timing="ON_TIME", pane_index=0),
            expected_row(second, pane_timing="ON_TIME", pane_index=0),
        ],
    )


def test_stream_two_keys_in_one_window():
    eu = [ev(T0_S + 1, event_id="a"), ev(T0_S + 2, event_id="b", user_key="u2")]
    us = [ev(T0_S + 3, event_id="c", region="us-central1")]
    flash = [ev(T0_S + 4, event_id="d", model="gemini-2.5-flash", latency_ms=12.5)]
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(e) for e in eu + us + flash])
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [
            expected_row(eu, pane_timing="ON_TIME", pane_index=0),
            expected_row(us, pane_timing="ON_TIME", pane_index=0),
            expected_row(flash, pane_timing="ON_TIME", pane_index=0),
        ],
    )


def test_stream_one_batch_across_windows_and_keys_is_split_by_window_and_key():
    first = ev(T0_S + 59, event_id="a", user_key="u1")
    second = [ev(T0_S + 60, event_id="b", user_key="u2"), ev(T0_S + 61, event_id="c")]
    us = [ev(T0_S + 3, event_id="d", region="us-central1")]
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([batched([*second, first, *us])])
        .advance_watermark_to(T0_S + 60)
        .advance_watermark_to(T0_S + 120)
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [
            expected_row([first], pane_timing="ON_TIME", pane_index=0),
            expected_row(second, pane_timing="ON_TIME", pane_index=0),
            expected_row(us, pane_timing="ON_TIME", pane_index=0),
        ],
    )


def test_stream_a_batch_with_on_time_late_and_too_late_events():
    """Each event's window decides: on time in the open window, late within the lateness in
    an old one, dropped beyond it, all from the same batch."""
    old = ev(T0_S + 5, event_id="a", user_key="u1")
    late = ev(T0_S + 10, event_id="b", user_key="u2")
    too_late = ev(T0_S - 600, event_id="c", token_count=999_999)  # window ended 9+ min ago
    current = ev(T0_S + 300, event_id="d")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(old)])
        .advance_watermark_to(T0_S + 290)
        .add_elements([batched([late, too_late, current])])
        .advance_watermark_to_infinity()
    )
    run_stream(
        stream,
        [
            expected_row([old], pane_timing="ON_TIME", pane_index=0),
            expected_row([old, late], pane_timing="LATE", pane_index=1),
            expected_row([current], pane_timing="ON_TIME", pane_index=0),
        ],
        allowed_lateness_s=300,
    )
