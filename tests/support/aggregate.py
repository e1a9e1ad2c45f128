"""Inputs of ``AggregateMetrics`` and the rows expected of it, computed independently of
``transforms.sketches``: sums and counts by hand, percentiles with the ``ddsketch`` library,
bins with its mapping."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

from apache_beam.transforms.window import TimestampedValue
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from tests.support.factories import redacted_event
from transforms import sketches
from transforms.elements import EventBatch, IngestionBin, LatencyBin, MetricRow, RedactedEvent
from transforms.pricing.table import parse_price_table

__all__ = [
    "E1",
    "E2",
    "E3",
    "E4_NEXT_WINDOW",
    "E5_OTHER_REGION",
    "MAPPING",
    "PRICES",
    "T0_S",
    "ZERO_INDEX",
    "batched",
    "bucket_value",
    "comparable",
    "ev",
    "expected_row",
    "stamped",
    "utc",
]


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
    ingested = Counter(int(e.ingested_at.timestamp() // 1) for e in events if e.ingested_at)
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
        ingestion_counts=tuple(IngestionBin(s, n) for s, n in sorted(ingested.items())),
    )


# Three events of one window and key, one of the next window, one of another region. Their
# ingestion times (the Pub/Sub publish time): E1 and E3 half a second apart within one second,
# E2 unknown (an archive from before the field).
E1 = ev(
    T0_S + 1,
    ingested_at=utc(T0_S + 62.25),
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
    ingested_at=utc(T0_S + 62.75),
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


E4_NEXT_WINDOW = ev(
    T0_S + 60, event_id="e4", user_key="u3", latency_ms=250.0, ingested_at=utc(T0_S + 61)
)
E5_OTHER_REGION = ev(T0_S + 10, event_id="e5", region="us-central1", latency_ms=40.0)


def batched(events: list[RedactedEvent]) -> TimestampedValue:
    """Several events in one batch, stamped with the earliest, as the core emits them."""
    return TimestampedValue(
        EventBatch("", tuple(events)), min(e.event_time.timestamp() for e in events)
    )
