"""AggregateMetrics: exact rows in batch, and pane behaviour in streaming (TestStream).

Expected rows are computed from the input events independently of ``transforms.sketches``:
sums and counts by hand, percentiles with the ``ddsketch`` library, bins with its mapping.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections import Counter
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from tests.factories import redacted_event
from tests.support.pipelines import TestPipeline
from transforms import sketches
from transforms.aggregate import (
    AggregateMetrics,
    _key_by_model_region,
    _MergePartialsFn,
    _MetricsCombineFn,
)
from transforms.elements import EventBatch, LatencyBin, MetricRow, RedactedEvent
from transforms.pricing.table import parse_price_table

T0_S = 1_769_508_000  # 2026-01-27T10:00:00Z, a boundary of 60 s windows
MAPPING = LogarithmicMapping(0.01)
ZERO_INDEX = -2147483648
# gemini-2.5-pro is priced (the February price is not in effect yet on 2026-01-27);
# gemini-2.5-flash is not in the table, so its rows have no cost.
PRICES = parse_price_table(
    """
version: test-1
currency: USD
models:
  gemini-2.5-pro:
    - {effective_from: 2026-01-01, prompt_per_1k: 0.002, completion_per_1k: 0.008}
    - {effective_from: 2026-02-01, prompt_per_1k: 0.004, completion_per_1k: 0.016}
"""
)
JANUARY = {"gemini-2.5-pro": (Decimal("0.002"), Decimal("0.008"))}


def ev(t_s: float, **overrides) -> RedactedEvent:
    return redacted_event(event_time_s=t_s, **overrides)


def stamped(event: RedactedEvent) -> TimestampedValue:
    """``event`` as the core hands it over: a batch (of one), stamped with its event time."""
    return TimestampedValue(EventBatch("", (event,)), event.event_time.timestamp())


def utc(t_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t_s, dt.UTC)


def bucket_value(latency_ms: float) -> float:
    """The sketch's estimate for a bucket holding only ``latency_ms`` (library mapping)."""
    return MAPPING.value(MAPPING.key(latency_ms)) if latency_ms else 0.0


def comparable(row: MetricRow) -> MetricRow:
    """``row`` without what varies between runs: emitted_at, and the HLL bytes, whose layout
    depends on insertion and merge order, replaced by (lg_k, rounded estimate)."""
    users = sketches.deserialize_users(row.users_hll)
    return row._replace(emitted_at=None, users_hll=(users.lg_config_k, round(users.get_estimate())))


def unsplit_tokens(e: RedactedEvent) -> int:
    """What token_count has beyond the reported split, for events without both counts."""
    if e.prompt_tokens is not None and e.completion_tokens is not None:
        return 0
    return max(e.token_count - (e.prompt_tokens or 0) - (e.completion_tokens or 0), 0)


def expected_cost(events: list[RedactedEvent]) -> float | None:
    """USD at the January prices of the test table, in decimal, to the 1e-9 USD."""
    if events[0].model not in JANUARY:
        return None
    prompt, completion = JANUARY[events[0].model]
    total = sum(
        (e.prompt_tokens or 0) * prompt
        + ((e.completion_tokens or 0) + unsplit_tokens(e)) * completion
        for e in events
    )
    return float((total / 1000).quantize(Decimal("1e-9")))


def expected_row(
    events: list[RedactedEvent],
    *,
    pane_timing: str,
    pane_index: int,
    window_s: int = 60,
    source: str = "streaming",
) -> MetricRow:
    """The comparable row for ``events`` (one window, one key), computed independently."""
    start_s = int(events[0].event_time.timestamp()) // window_s * window_s
    reference = DDSketch(0.01)
    for e in events:
        reference.add(e.latency_ms)
    bins = Counter(MAPPING.key(e.latency_ms) if e.latency_ms else ZERO_INDEX for e in events)
    redactions: dict[str, int] = {}
    for e in events:
        for info_type, n in e.redaction_counts.items():
            redactions[info_type] = redactions.get(info_type, 0) + n
    users = len({e.user_key for e in events})
    return MetricRow(
        window_start=utc(start_s),
        window_end=utc(start_s + window_s),
        model=events[0].model,
        region=events[0].region,
        request_count=len(events),
        token_sum=sum(e.token_count for e in events),
        prompt_token_sum=sum(e.prompt_tokens or 0 for e in events),
        completion_token_sum=sum(e.completion_tokens or 0 for e in events),
        latency_p50_ms=float(reference.get_quantile_value(0.5)),
        latency_p95_ms=float(reference.get_quantile_value(0.95)),
        latency_p99_ms=float(reference.get_quantile_value(0.99)),
        latency_sketch_bins=tuple(LatencyBin(i, n) for i, n in sorted(bins.items())),
        latency_sketch_relative_accuracy=0.01,
        distinct_users_approx=users,
        users_hll=(12, users),
        policy_flag_counts=dict(Counter(f for e in events for f in set(e.policy_flags))),
        data_class_counts=dict(Counter(e.data_class for e in events)),
        redaction_counts=redactions,
        pane_timing=pane_timing,
        pane_index=pane_index,
        is_final=False,  # the Python DirectRunner never marks a pane as the last one
        emitted_at=None,
        source=source,
        unsplit_token_sum=sum(unsplit_tokens(e) for e in events),
        estimated_cost_usd=expected_cost(events),
        price_table_version="test-1",
        latest_event_time=max(e.event_time for e in events),
    )


# --- batch (bounded input) ------------------------------------------------------------------

E1 = ev(
    T0_S + 1,
    event_id="e1",
    user_key="u1",
    latency_ms=100.0,
    token_count=300,
    prompt_tokens=200,
    completion_tokens=100,
    policy_flags=("pii_redacted", "pii_redacted"),
    data_class="INTERNAL",
    redaction_counts={"EMAIL_ADDRESS": 2},
)
E2 = ev(
    T0_S + 30,
    event_id="e2",
    user_key="u2",
    latency_ms=0.0,
    token_count=50,
    prompt_tokens=None,
    completion_tokens=None,
    policy_flags=(),
    data_class="PUBLIC",
    redaction_counts={},
)
E3 = ev(
    T0_S + 59.999,
    event_id="e3",
    user_key="u1",
    latency_ms=2000.0,
    token_count=10,
    prompt_tokens=4,
    completion_tokens=6,
    policy_flags=("blocked_topic", "pii_redacted"),
    data_class="RESTRICTED",
    redaction_counts={"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 3},
)
E4_NEXT_WINDOW = ev(T0_S + 60, event_id="e4", user_key="u3", latency_ms=250.0)
E5_OTHER_REGION = ev(T0_S + 10, event_id="e5", region="us-central1", latency_ms=40.0)


def test_batch_rows_are_exact_per_window_and_key():
    started = dt.datetime.now(dt.UTC)
    with TestPipeline() as p:
        rows = (
            p
            | beam.Create([E1, E2, E3, E4_NEXT_WINDOW, E5_OTHER_REGION])
            | beam.Map(stamped)
            | AggregateMetrics(prices=PRICES)
        )
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
        )
        expected = expected_row(
            events, pane_timing="ON_TIME", pane_index=0, window_s=3600, source="backfill"
        )
        assert_that(
            rows | "Comparable" >> beam.Map(comparable),
            equal_to([expected]),
            label="CheckOneHourlyRow",
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size_s": 0},
        {"window_size_s": -60},
        {"allowed_lateness_s": 0},
        {"early_firing_s": -1},
    ],
)
def test_non_positive_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AggregateMetrics(**kwargs)


@pytest.mark.parametrize("kwargs", [{"window_size_s": 60.0}, {"early_firing_s": True}])
def test_non_int_arguments_are_rejected(kwargs):
    with pytest.raises(TypeError):
        AggregateMetrics(**kwargs)


# --- the CombineFn on its own: merges, coder, no aliasing ------------------------------------


def _accumulate(fn: _MetricsCombineFn, events: list[RedactedEvent]):
    acc = fn.create_accumulator()
    for e in events:
        acc = fn.add_input(acc, _key_by_model_region(e)[1])
    return acc


def test_merging_encoded_partial_accumulators_equals_one_pass():
    fn = _MetricsCombineFn()
    events = [
        ev(
            T0_S + i % 60,
            event_id=f"e{i}",
            user_key=f"u{i % 40}",
            latency_ms=float(i % 17) * 37.5,
            token_count=i,
            prompt_tokens=None if i % 4 else i // 2,
            policy_flags=("pii_redacted",) if i % 3 else (),
            data_class=("PUBLIC", "INTERNAL")[i % 2],
            redaction_counts={"EMAIL_ADDRESS": i % 3},
        )
        for i in range(600)
    ]
    coder = fn.get_accumulator_coder()
    parts = [
        coder.decode(coder.encode(_accumulate(fn, events[:250]))),
        pickle.loads(pickle.dumps(_accumulate(fn, events[250:400]))),
        _accumulate(fn, events[400:]),
    ]
    last_before = fn.extract_output(parts[2])
    merged = fn.extract_output(fn.merge_accumulators(parts))
    single = fn.extract_output(_accumulate(fn, events))
    assert merged._replace(users_hll=None) == single._replace(users_hll=None)
    assert merged.distinct_users_approx == 40
    assert fn.extract_output(parts[2]) == last_before  # only the first may be modified


def test_merging_a_panes_partials_at_once_equals_merging_them_one_by_one():
    # The runner re-combines a window's partials for every streaming pane with add_inputs.
    fn = _MergePartialsFn()
    events = [
        ev(T0_S + i % 60, event_id=f"e{i}", user_key=f"u{i % 70}", latency_ms=float(i % 23) * 11.0)
        for i in range(300)
    ]
    parts = [_accumulate(_MetricsCombineFn(), events[i : i + 30]) for i in range(0, 300, 30)]
    before = [fn.extract_output(p) for p in parts]
    one_by_one = fn.create_accumulator()
    for part in parts:
        one_by_one = fn.add_input(one_by_one, part)
    at_once = fn.extract_output(fn.add_inputs(fn.create_accumulator(), iter(parts)))
    assert at_once._replace(users_hll=None) == fn.extract_output(one_by_one)._replace(
        users_hll=None
    )
    assert at_once.request_count == 300 and at_once.distinct_users_approx == 70
    assert [fn.extract_output(p) for p in parts] == before  # the partials are not modified
    empty = fn.extract_output(fn.add_inputs(fn.create_accumulator(), []))
    assert empty.request_count == 0


def test_extracted_output_does_not_change_when_the_accumulator_does():
    # In accumulating mode the runner keeps adding to an accumulator after a pane fired.
    fn = _MetricsCombineFn()
    acc = _accumulate(fn, [E1])
    pane = fn.extract_output(acc)
    snapshot = pickle.loads(pickle.dumps(pane))
    acc = fn.add_input(acc, _key_by_model_region(E3)[1])
    assert fn.extract_output(acc).request_count == 2
    assert pane == snapshot


def test_unsplit_tokens_are_what_token_count_has_beyond_the_reported_split():
    fn = _MetricsCombineFn()
    events = [
        # Both reported: the split is taken as it is, even if token_count disagrees (0).
        ev(T0_S, event_id="both", token_count=100, prompt_tokens=70, completion_tokens=20),
        ev(T0_S, event_id="prompt", token_count=100, prompt_tokens=70, completion_tokens=None),
        ev(T0_S, event_id="completion", token_count=100, prompt_tokens=None, completion_tokens=40),
        ev(T0_S, event_id="neither", token_count=100, prompt_tokens=None, completion_tokens=None),
        # More reported than token_count: nothing unsplit, never negative.
        ev(T0_S, event_id="over", token_count=10, prompt_tokens=25, completion_tokens=None),
    ]
    totals = fn.extract_output(_accumulate(fn, events))
    assert (
        totals.token_sum,
        totals.prompt_token_sum,
        totals.completion_token_sum,
        totals.unsplit_token_sum,
    ) == (410, 165, 60, 0 + 30 + 60 + 100 + 0)


def test_accumulators_encoded_before_unsplit_tokens_existed_still_decode():
    # A streaming job updated in place holds accumulators in the old 9-field encoding.
    fn = _MetricsCombineFn()
    coder = fn.get_accumulator_coder()
    legacy = pickle.dumps(pickle.loads(coder.encode(_accumulate(fn, [E1, E2])))[:9])
    decoded = coder.decode(legacy)
    assert (decoded.request_count, decoded.token_sum, decoded.unsplit_token_sum) == (2, 350, 0)
    decoded = fn.add_input(decoded, _key_by_model_region(E2)[1])
    assert fn.extract_output(decoded).unsplit_token_sum == 50


# --- streaming (unbounded input, TestStream) -------------------------------------------------


def run_stream(stream: TestStream, expected: list[MetricRow], **aggregate_kwargs) -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        rows = p | stream | AggregateMetrics(prices=PRICES, **aggregate_kwargs)
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


def batched(events: list[RedactedEvent]) -> TimestampedValue:
    """Several events in one batch, stamped with the earliest, as the core emits them."""
    return TimestampedValue(
        EventBatch("", tuple(events)), min(e.event_time.timestamp() for e in events)
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


def test_batch_rows_are_the_same_however_events_are_batched():
    events = [E1, E2, E3, E4_NEXT_WINDOW, E5_OTHER_REGION]
    with TestPipeline() as p:
        one = (
            p
            | "One" >> beam.Create([batched(events)])
            | "AggOne" >> AggregateMetrics(prices=PRICES)
        )
        each = (
            p
            | "Each" >> beam.Create(events)
            | beam.Map(stamped)
            | "AggEach" >> AggregateMetrics(prices=PRICES)
        )
        expected = [
            expected_row([E1, E2, E3], pane_timing="ON_TIME", pane_index=0, source="backfill"),
            expected_row([E4_NEXT_WINDOW], pane_timing="ON_TIME", pane_index=0, source="backfill"),
            expected_row([E5_OTHER_REGION], pane_timing="ON_TIME", pane_index=0, source="backfill"),
        ]
        assert_that(one | "C1" >> beam.Map(comparable), equal_to(expected), label="one batch")
        assert_that(each | "C2" >> beam.Map(comparable), equal_to(expected), label="per event")
