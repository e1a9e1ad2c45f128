"""Windowed usage metrics per (model, region): ``AggregateMetrics``.

Input: deduplicated ``EventBatch`` elements (each event carries its event time), bounded
(backfill) or unbounded (streaming). Output: one ``MetricRow`` per pane of each fixed event-time
window and (model, region). Panes accumulate, so each row carries the whole window seen so far
and sinks upsert by ``(window_start, model, region)``: the latest pane wins, and a backfill row
(``source``) wins over a streaming one. Each row carries its estimated cost from a price table
(``transforms.pricing.table``) and a per-second histogram of its events' ingestion times, from
which the sink measures their freshness when it commits the row (ADR 0010).

Counters (namespace ``genai``, per bundle, so they cost nothing per event): what the dashboards
and alerts of ``terraform/monitoring.tf`` read on Dataflow (``docs/observability.md``).

Errors: an event the combiner cannot add (a latency outside what the sketch indexes, a user key
the HLL cannot take: never one that parsing produces, but an archive written before the
contract's bounds may hold one) is left out of its window and becomes a dead letter
``internal_error:aggregate``, and so does a row that cannot be formatted; neither fails the
bundle. These are not outcomes of an input (the event is written), so ``AggregateMetrics`` returns
them apart (``MetricOutputs.dead_letters``), like the sinks' rows. Sums: exact (Python ints)
while combining; a row's sums and counts are saturated at the int64 maximum (what every store
holds) with the counter ``metric_sums_saturated``, so no window can overflow a column. With the
contract's bounds (tokens at most 1e8 per event) that takes over 9e10 events in one window.

Length (over 600 lines): the accumulator, its coder, the combine and the trigger share the
accumulator's layout and stay in one module.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import pickle
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, WindowedValue

from transforms import sketches
from transforms.deadletter import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    internal_error_of,
    is_element_error,
)
from transforms.elements import (
    DeadLetter,
    EventBatch,
    IngestionBin,
    LatencyBin,
    MetricRow,
    RedactedEvent,
    event_micros,
    micros_to_datetime,
)
from transforms.pricing.table import (
    DEFAULT_PRICE_TABLE,
    PriceTable,
    estimate_cost_usd,
    load_price_table,
    price_on,
)
from transforms.windowing import PANE_TIMINGS, accumulating_windows

__all__ = [
    "BACKFILL",
    "INT64_MAX",
    "LATENCY_BUCKETS_MS",
    "SOURCES",
    "STREAMING",
    "AggregateMetrics",
    "MetricOutputs",
]

# MetricRow.source: a streaming pane (unbounded input) or a batch recomputation (bounded input).
STREAMING = "streaming"
BACKFILL = "backfill"
SOURCES = (STREAMING, BACKFILL)

_QUANTILES = (0.5, 0.95, 0.99)
_GLOBAL = (window.GlobalWindow(),)
# Most (key, window) accumulators one bundle holds before it emits them (each has a sketch of
# a few kB at most): a batch bundle can span days of windows.
_MAX_PARTIALS = 4096
# Upper bounds (ms) of the latency histogram exported as cumulative counters per model,
# ``latency_ms_bucket.<model>.<le>`` (Prometheus' ``le`` convention, so Cloud Monitoring's PromQL
# histogram_quantile reads them). The exact percentiles are the sketches in the rows.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2000, 5000, 10000, 30000, 60000)
_MICROS_PER_S = 1_000_000
# The largest value of an Avro long, a DuckDB BIGINT and a BigQuery INT64: a row's sums and
# counts are saturated here.
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)  # sums can only go below 0 with counts no contract version accepts
_STEP = "aggregate"


# What the combiner sees of a RedactedEvent: (user_key, latency_ms, token_count, prompt_tokens,
# completion_tokens, policy_flags, data_class, redaction_counts, event_time, ingested_at,
# unknown_fields). Projecting before
# the combine keeps prompt and response text out of shuffles and, on runners that buffer a
# window's elements instead of lifting the combiner (the DirectRunner with non-default
# windowing), out of state held for up to the allowed lateness. A plain tuple, because Beam's
# default coder round-trips it in ~2 µs and 48 bytes, against ~11 µs for a NamedTuple of the
# same fields (which carries its type) and ~30 µs and 400 bytes for the whole RedactedEvent.
_Usage = tuple[
    str,
    float,
    int,
    int | None,
    int | None,
    tuple[str, ...],
    str,
    dict[str, int],
    dt.datetime,
    dt.datetime | None,
    tuple[str, ...],
]


def _key_by_model_region(event: RedactedEvent) -> tuple[tuple[str, str], _Usage]:
    return (event.model, event.region), (
        event.user_key,
        event.latency_ms,
        event.token_count,
        event.prompt_tokens,
        event.completion_tokens,
        event.policy_flags,
        event.data_class,
        event.redaction_counts,
        event.event_time,
        event.ingested_at,
        event.unknown_fields,
    )


class _MetricsAccumulator:
    """Running totals of one window and key. Mutable: the combiner updates it in place."""

    __slots__ = (
        "completion_token_sum",
        "data_class_counts",
        "ingestion_counts",
        "latency_counts",
        "latest_event_time",
        "policy_flag_counts",
        "prompt_token_sum",
        "redaction_counts",
        "request_count",
        "schema_drift_counts",
        "token_sum",
        "unsplit_token_sum",
        "users",
    )

    def __init__(self) -> None:
        self.request_count = 0
        self.token_sum = 0
        self.prompt_token_sum = 0
        self.completion_token_sum = 0
        self.unsplit_token_sum = 0
        self.latency_counts: sketches.LatencyCounts = sketches.new_latency_counts()
        self.users = sketches.new_users()
        self.policy_flag_counts: dict[str, int] = {}
        self.data_class_counts: dict[str, int] = {}
        self.redaction_counts: dict[str, int] = {}
        self.latest_event_time: dt.datetime | None = None
        # Events per second of ingestion (seconds since the epoch).
        self.ingestion_counts: dict[int, int] = {}
        self.schema_drift_counts: dict[str, int] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # The HLL sketch is a native object that pickle refuses; go through bytes.
        return _decode_accumulator, (_encode_accumulator(self),)


def _encode_accumulator(acc: _MetricsAccumulator) -> bytes:
    return pickle.dumps(
        (
            acc.request_count,
            acc.token_sum,
            acc.prompt_token_sum,
            acc.completion_token_sum,
            acc.latency_counts,
            sketches.serialize_users(acc.users),
            acc.policy_flag_counts,
            acc.data_class_counts,
            acc.redaction_counts,
            acc.unsplit_token_sum,
            acc.latest_event_time,
            acc.ingestion_counts,
            acc.schema_drift_counts,
        ),
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def _decode_accumulator(data: bytes) -> _MetricsAccumulator:
    acc = _MetricsAccumulator()
    fields = pickle.loads(data)
    if len(fields) == 9:
        # Encoded before unsplit_token_sum existed (state of a streaming job updated in place):
        # those windows count no unsplit tokens from before the update.
        fields = (*fields, 0)
    if len(fields) == 10:
        fields = (*fields, None)  # before latest_event_time: known from the next event on
    if len(fields) == 11:
        # Before ingestion_counts: the events counted before the update have no ingestion
        # time, so the sink measures no freshness for them.
        fields = (*fields, {})
    if len(fields) == 12:
        fields = (*fields, {})  # before schema_drift_counts: counted from the update on
    (
        acc.request_count,
        acc.token_sum,
        acc.prompt_token_sum,
        acc.completion_token_sum,
        acc.latency_counts,
        users,
        acc.policy_flag_counts,
        acc.data_class_counts,
        acc.redaction_counts,
        acc.unsplit_token_sum,
        acc.latest_event_time,
        acc.ingestion_counts,
        acc.schema_drift_counts,
    ) = fields
    acc.users = sketches.deserialize_users(users)
    return acc


class _MetricsAccumulatorCoder(beam.coders.Coder):
    """Encodes accumulators for shuffles and state (the HLL as its compact bytes, ~2 kB dense)."""

    def encode(self, value: _MetricsAccumulator) -> bytes:
        return _encode_accumulator(value)

    def decode(self, encoded: bytes) -> _MetricsAccumulator:
        return _decode_accumulator(encoded)

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class _WindowTotals(NamedTuple):
    """What the combiner extracts for one pane: the ``MetricRow`` fields that depend on data."""

    request_count: int
    token_sum: int
    prompt_token_sum: int
    completion_token_sum: int
    unsplit_token_sum: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_sketch_bins: tuple[LatencyBin, ...]
    distinct_users_approx: int
    users_hll: bytes
    policy_flag_counts: dict[str, int]
    data_class_counts: dict[str, int]
    redaction_counts: dict[str, int]
    latest_event_time: dt.datetime | None
    ingestion_counts: tuple[IngestionBin, ...]
    schema_drift_counts: dict[str, int]


def _add_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for name, count in other.items():
        into[name] = into.get(name, 0) + count


class _MetricsCombineFn(beam.CombineFn):
    """Combines ``_Usage`` tuples into ``_WindowTotals``.

    ``add_input`` is the per-event cost, so it touches only ints, dicts and the native HLL
    update (no sketch objects built, nothing serialized). ``extract_output`` copies what it
    emits, because in accumulating mode the runner keeps updating the accumulator afterwards.
    """

    def create_accumulator(self) -> _MetricsAccumulator:
        return _MetricsAccumulator()

    def add_input(self, acc: _MetricsAccumulator, usage: _Usage) -> _MetricsAccumulator:
        (
            user_key,
            latency_ms,
            token_count,
            prompt_tokens,
            completion_tokens,
            policy_flags,
            data_class,
            redaction_counts,
            event_time,
            ingested_at,
            unknown_fields,
        ) = usage
        # What can fail for one event comes first, so a failure leaves the accumulator as it
        # was: the latency's bucket, the comparison of times, the ingestion second, the user
        # key's HLL update.
        index = sketches.latency_index(latency_ms)
        later = acc.latest_event_time is None or event_time > acc.latest_event_time
        second = None if ingested_at is None else event_micros(ingested_at) // _MICROS_PER_S
        acc.users.update(user_key)
        latency_counts = acc.latency_counts
        latency_counts[index] = latency_counts.get(index, 0) + 1
        acc.request_count += 1
        acc.token_sum += token_count
        if prompt_tokens is not None:
            acc.prompt_token_sum += prompt_tokens
        if completion_tokens is not None:
            acc.completion_token_sum += completion_tokens
        if prompt_tokens is None or completion_tokens is None:
            # Tokens without a prompt/completion split: what token_count has beyond the part
            # that was reported. (With both reported, the split is taken as it is.)
            acc.unsplit_token_sum += max(
                token_count - (prompt_tokens or 0) - (completion_tokens or 0), 0
            )
        if policy_flags:
            flag_counts = acc.policy_flag_counts
            # Requests per flag: a flag repeated in one request counts once.
            for flag in policy_flags if len(policy_flags) == 1 else set(policy_flags):
                flag_counts[flag] = flag_counts.get(flag, 0) + 1
        class_counts = acc.data_class_counts
        class_counts[data_class] = class_counts.get(data_class, 0) + 1
        if redaction_counts:
            _add_counts(acc.redaction_counts, redaction_counts)
        if later:
            acc.latest_event_time = event_time
        if second is not None:
            ingestion = acc.ingestion_counts
            ingestion[second] = ingestion.get(second, 0) + 1
        if unknown_fields:  # events per dropped field name (distinct names: drift_names)
            drift = acc.schema_drift_counts
            for name in unknown_fields:
                drift[name] = drift.get(name, 0) + 1
        return acc

    def merge_accumulators(self, accumulators: Any) -> _MetricsAccumulator:
        # Only the first accumulator may be modified; the others can be shared.
        accumulators = iter(accumulators)
        merged = next(accumulators)
        user_sketches = [merged.users]
        for acc in accumulators:
            merged.request_count += acc.request_count
            merged.token_sum += acc.token_sum
            merged.prompt_token_sum += acc.prompt_token_sum
            merged.completion_token_sum += acc.completion_token_sum
            merged.unsplit_token_sum += acc.unsplit_token_sum
            sketches.merge_latency_counts(merged.latency_counts, acc.latency_counts)
            user_sketches.append(acc.users)
            _add_counts(merged.policy_flag_counts, acc.policy_flag_counts)
            _add_counts(merged.data_class_counts, acc.data_class_counts)
            _add_counts(merged.redaction_counts, acc.redaction_counts)
            _add_counts(merged.ingestion_counts, acc.ingestion_counts)
            _add_counts(merged.schema_drift_counts, acc.schema_drift_counts)
            if merged.latest_event_time is None or (
                acc.latest_event_time is not None
                and acc.latest_event_time > merged.latest_event_time
            ):
                merged.latest_event_time = acc.latest_event_time
        if len(user_sketches) > 1:
            merged.users = sketches.merge_users(user_sketches)
        return merged

    def extract_output(self, acc: _MetricsAccumulator) -> _WindowTotals:
        p50, p95, p99 = sketches.latency_quantiles(acc.latency_counts, _QUANTILES)
        return _WindowTotals(
            request_count=acc.request_count,
            token_sum=acc.token_sum,
            prompt_token_sum=acc.prompt_token_sum,
            completion_token_sum=acc.completion_token_sum,
            unsplit_token_sum=acc.unsplit_token_sum,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            latency_sketch_bins=sketches.to_latency_bins(acc.latency_counts),
            distinct_users_approx=sketches.users_estimate(acc.users),
            users_hll=sketches.serialize_users(acc.users),
            policy_flag_counts=dict(acc.policy_flag_counts),
            data_class_counts=dict(acc.data_class_counts),
            redaction_counts=dict(acc.redaction_counts),
            latest_event_time=acc.latest_event_time,
            ingestion_counts=tuple(
                IngestionBin(second, count)
                for second, count in sorted(acc.ingestion_counts.items())
            ),
            schema_drift_counts=dict(acc.schema_drift_counts),
        )

    def get_accumulator_coder(self) -> beam.coders.Coder:
        return _MetricsAccumulatorCoder()


def _latency_bucket_counts(counts: sketches.LatencyCounts) -> list[int]:
    """Requests per latency bucket (``LATENCY_BUCKETS_MS``, then one beyond the last bound)
    from a sketch: each sketch bucket is placed by its representative value (within 1%)."""
    per_bucket = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for index, count in counts.items():
        value = sketches.bucket_value(index)
        per_bucket[bisect.bisect_left(LATENCY_BUCKETS_MS, value)] += count
    return per_bucket


class _SafeCounter:
    """A Beam counter whose increments are clamped to int64 (a Beam counter cell is a C long);
    an increment that still overflows the cell is dropped and counted. These counters feed
    dashboards: a window's exact figures are its row's."""

    def __init__(self, counter):
        self._counter = counter

    def inc(self, n: int) -> None:
        try:
            self._counter.inc(max(INT64_MIN, min(INT64_MAX, n)))
        except OverflowError:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "monitoring_counter_overflow").inc()


def _count_partials(
    partials: list[tuple[str, int, _MetricsAccumulator]], prices: PriceTable
) -> None:
    """Increments the ``genai`` counters of a bundle's partials (model, window start µs,
    accumulator): requests, tokens, estimated cost (µUSD; the cost is linear in the token
    sums, so the partials' costs add up to the windows'), requests per policy flag and the
    cumulative latency histogram per model. Counter names are documented in
    ``docs/observability.md``; models and flags are grammar-checked slugs."""

    def counter(namespace: str, name: str):
        return _SafeCounter(beam.metrics.Metrics.counter(namespace, name))

    requests = tokens = prompt = completion = cost_micro_usd = 0
    flags: dict[str, int] = {}
    latency: dict[str, list[int]] = {}
    for model, start_us, acc in partials:
        requests += acc.request_count
        tokens += acc.token_sum
        prompt += acc.prompt_token_sum
        completion += acc.completion_token_sum
        price = price_on(prices, model, micros_to_datetime(start_us).date())
        if price is not None:
            cost = estimate_cost_usd(
                price, acc.prompt_token_sum, acc.completion_token_sum, acc.unsplit_token_sum
            )
            if math.isfinite(cost):
                cost_micro_usd += round(cost * 1_000_000)
        _add_counts(flags, acc.policy_flag_counts)
        buckets = _latency_bucket_counts(acc.latency_counts)
        into = latency.setdefault(model, [0] * len(buckets))
        for i, n in enumerate(buckets):
            into[i] += n
    counter(METRICS_NAMESPACE, "requests_aggregated").inc(requests)
    counter(METRICS_NAMESPACE, "tokens").inc(tokens)
    counter(METRICS_NAMESPACE, "prompt_tokens").inc(prompt)
    counter(METRICS_NAMESPACE, "completion_tokens").inc(completion)
    if cost_micro_usd:
        counter(METRICS_NAMESPACE, "estimated_cost_micro_usd").inc(cost_micro_usd)
    for flag, n in flags.items():
        counter(METRICS_NAMESPACE, f"policy_flag.{flag}").inc(n)
    for model, buckets in latency.items():
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS_MS, "+Inf"), buckets, strict=True):
            running += n
            if running:
                counter(METRICS_NAMESPACE, f"latency_ms_bucket.{model}.{bound}").inc(running)


class _PreCombineFn(beam.DoFn):
    """Folds the events of a bundle's batches into one accumulator per (key, window), so the
    windowing and trigger machinery downstream sees one partial per bundle, key and window
    instead of every event (the DirectRunner evaluates triggers per element and, in streaming,
    does not lift combiners, so it keeps every partial of a window until the window expires).
    A partial is timestamped with its earliest member's event time, in the global window: the
    ``WindowInto`` after this step puts it in its members' window.

    It also counts the bundle for Cloud Monitoring (``_count_partials``), from the partials, so
    the counters cost nothing per event."""

    def __init__(self, window_size_s: int, prices: PriceTable):
        self._size_us = window_size_s * 1_000_000
        self._prices = prices

    def setup(self):
        self._combine = _MetricsCombineFn()

    def start_bundle(self):
        self._partials: dict[tuple, list] = {}

    def process(self, batch: EventBatch):
        partials, size_us, combine = self._partials, self._size_us, self._combine
        for event in batch.events:
            try:
                micros = event_micros(event.event_time)
                key, usage = _key_by_model_region(event)
                # The window start as FixedWindows(window_size_s) computes it (offset 0).
                slot = (key, micros - micros % size_us)
                entry = partials.get(slot)
                if entry is None:  # stored only once the event is in it
                    accumulator = combine.add_input(combine.create_accumulator(), usage)
                    partials[slot] = [accumulator, micros]
                else:
                    combine.add_input(entry[0], usage)  # unchanged if it raises
                    if micros < entry[1]:
                        entry[1] = micros
            except Exception as error:
                if not is_element_error(error):
                    raise
                yield _event_left_out(event, error)
        if len(partials) >= _MAX_PARTIALS:  # a long batch bundle spanning many windows
            yield from self.finish_bundle()

    def finish_bundle(self):
        if self._partials:
            _count_partials(
                [
                    (model, start, accumulator)
                    for ((model, _), start), (accumulator, _) in self._partials.items()
                ],
                self._prices,
            )
        # Keyed by (model, region, window start): the DirectRunner copies all of a key's
        # window state (every open window's accumulator) for each bundle of the key, so with
        # (model, region) keys and a 1-hour lateness that copy grew with the hour's windows
        # (13% of a streaming run at 25 minutes). One window per key keeps it constant.
        for ((model, region), start), (accumulator, earliest) in self._partials.items():
            yield WindowedValue(
                ((model, region, start), accumulator), Timestamp(micros=earliest), _GLOBAL
            )
        self._partials = {}


def _event_left_out(event: RedactedEvent, error: Exception):
    """The ``internal_error:aggregate`` dead letter of an event the combiner could not add
    (its payload: the event without its texts, which the archive holds), at the input batch's
    timestamp, in the global window."""
    record = internal_error_of(_STEP, event._replace(prompt=None, response=None), error)
    return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)


def _saturated(value: int, counter) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    counter.inc()
    return INT64_MAX if value > 0 else INT64_MIN


def _saturated_counts(counts: dict[str, int], counter) -> dict[str, int]:
    if all(INT64_MIN <= n <= INT64_MAX for n in counts.values()):
        return counts
    return {name: _saturated(n, counter) for name, n in counts.items()}


class _MergePartialsFn(_MetricsCombineFn):
    """Combines the partial accumulators of ``_PreCombineFn``.

    ``add_inputs`` merges all of a pane's partials at once: in streaming the runner keeps a
    window's partials and re-combines them for every pane, and one HLL union over all of them
    costs far less than a union per partial (in 9% of a streaming run's py-spy samples before).
    """

    def add_input(self, acc: _MetricsAccumulator, partial: _MetricsAccumulator):
        return self.merge_accumulators([acc, partial])

    def add_inputs(self, acc: _MetricsAccumulator, partials: Any, *args, **kwargs):
        return self.merge_accumulators(itertools.chain((acc,), partials))


class _FormatMetricRowFn(beam.DoFn):
    """Turns one pane's ``((model, region, window start), _WindowTotals)`` into a priced
    ``MetricRow``.

    pane_timing is the runner's. Caveat of the Python DirectRunner (not Dataflow): it labels a
    processing-time firing by comparing the processing time with the window end, so an EARLY
    pane that fires after the window's end in wall-clock time is reported as LATE.
    """

    def __init__(self, source: str, prices: PriceTable):
        self._source = source
        self._prices = prices

    def setup(self):
        self._unpriced = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "metric_rows_unpriced")
        self._saturated = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "metric_sums_saturated")

    def process(
        self,
        element: tuple[tuple[str, str, int], _WindowTotals],
        win: window.IntervalWindow = beam.DoFn.WindowParam,
        pane: PaneInfo = beam.DoFn.PaneInfoParam,
    ):
        try:
            yield self._row(element, win, pane)
        except Exception as error:
            if not is_element_error(error):
                raise
            yield self._row_left_out(element, win, error)

    def _row_left_out(self, element, win: window.IntervalWindow, error: Exception):
        """The ``internal_error:aggregate`` dead letter of a row that could not be formatted,
        with the key, the window and the totals as payload."""
        (model, region, _), totals = element
        key = {"model": model, "region": region, "window": str(win), "totals": totals}
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, internal_error_of(_STEP, key, error))

    def _row(
        self,
        element: tuple[tuple[str, str, int], _WindowTotals],
        win: window.IntervalWindow,
        pane: PaneInfo,
    ) -> MetricRow:
        (model, region, _), totals = element
        totals = self._within_int64(totals)
        window_start = win.start.to_utc_datetime(has_tz=True)
        price = price_on(self._prices, model, window_start.date())
        if price is None:
            self._unpriced.inc()
            cost = None
        else:
            cost = estimate_cost_usd(
                price,
                totals.prompt_token_sum,
                totals.completion_token_sum,
                totals.unsplit_token_sum,
            )
        return MetricRow(
            window_start=window_start,
            window_end=win.end.to_utc_datetime(has_tz=True),
            model=model,
            region=region,
            request_count=totals.request_count,
            token_sum=totals.token_sum,
            prompt_token_sum=totals.prompt_token_sum,
            completion_token_sum=totals.completion_token_sum,
            latency_p50_ms=totals.latency_p50_ms,
            latency_p95_ms=totals.latency_p95_ms,
            latency_p99_ms=totals.latency_p99_ms,
            latency_sketch_bins=totals.latency_sketch_bins,
            latency_sketch_relative_accuracy=sketches.RELATIVE_ACCURACY,
            distinct_users_approx=totals.distinct_users_approx,
            users_hll=totals.users_hll,
            policy_flag_counts=totals.policy_flag_counts,
            data_class_counts=totals.data_class_counts,
            redaction_counts=totals.redaction_counts,
            pane_timing=PANE_TIMINGS[pane.timing],
            pane_index=pane.index,
            is_final=pane.is_last,
            emitted_at=dt.datetime.now(dt.UTC),
            source=self._source,
            unsplit_token_sum=totals.unsplit_token_sum,
            estimated_cost_usd=cost,
            price_table_version=self._prices.version,
            latest_event_time=totals.latest_event_time,
            ingestion_counts=totals.ingestion_counts,
            schema_drift_counts=totals.schema_drift_counts,
        )

    def _within_int64(self, totals: _WindowTotals) -> _WindowTotals:
        """``totals`` with every sum and count saturated at the int64 bounds (counted)."""
        sums = (
            totals.request_count,
            totals.token_sum,
            totals.prompt_token_sum,
            totals.completion_token_sum,
            totals.unsplit_token_sum,
        )
        maps = (
            totals.policy_flag_counts,
            totals.data_class_counts,
            totals.redaction_counts,
            totals.schema_drift_counts,
        )
        if (
            min(sums) >= INT64_MIN
            and max(sums) <= INT64_MAX
            and all(INT64_MIN <= n <= INT64_MAX for counts in maps for n in counts.values())
        ):
            return totals
        counter = self._saturated
        return totals._replace(
            request_count=_saturated(totals.request_count, counter),
            token_sum=_saturated(totals.token_sum, counter),
            prompt_token_sum=_saturated(totals.prompt_token_sum, counter),
            completion_token_sum=_saturated(totals.completion_token_sum, counter),
            unsplit_token_sum=_saturated(totals.unsplit_token_sum, counter),
            policy_flag_counts=_saturated_counts(totals.policy_flag_counts, counter),
            data_class_counts=_saturated_counts(totals.data_class_counts, counter),
            redaction_counts=_saturated_counts(totals.redaction_counts, counter),
            schema_drift_counts=_saturated_counts(totals.schema_drift_counts, counter),
        )


class MetricOutputs(NamedTuple):
    """What ``AggregateMetrics`` returns: ``rows``, the ``MetricRow`` panes; ``dead_letters``,
    ``DeadLetter`` records (``internal_error:aggregate``, in the global window) of the events
    and rows left out. These are not outcomes of an input: the events are written."""

    rows: beam.PCollection
    dead_letters: beam.PCollection


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (seconds), got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


class AggregateMetrics(beam.PTransform):
    """Computes usage metrics per fixed event-time window and (model, region).

    Input: a ``PCollection[EventBatch]`` of deduplicated events in the global window, bounded
    or unbounded; windows follow each event's ``event_time``. Output: ``MetricOutputs``:
    ``rows``, one ``MetricRow`` per pane of each window and key that has events, and
    ``dead_letters``, the events and rows left out (``internal_error:aggregate``, see the
    module docstring). Sums and counts in a row are saturated at ``INT64_MAX`` (counter
    ``metric_sums_saturated``).

    Panes (unbounded input): an EARLY pane every ``early_firing_s`` of processing time while
    the window is open, an ON_TIME pane when the watermark passes the window end, then a LATE
    pane for each batch of late events, as long as the watermark is within
    ``allowed_lateness_s`` of the window end. Events later than that are dropped by the runner
    and are in no row (the raw archive still has them; a backfill recomputes the window).
    Panes accumulate: every row holds everything the window has received so far, so the latest
    pane of a key supersedes the earlier ones. On a bounded input the watermark jumps to the
    end only after every element has been read, so each window and key gets one complete pane
    (ON_TIME on the DirectRunner) holding every event of the input, whatever its event time:
    in batch nothing is late, nothing is dropped for lateness, and there are no early firings.

    ``source`` says which of the two a row is: ``streaming`` (unbounded input, approximate:
    the runner drops events beyond the allowed lateness, and upstream dedupe is exact only
    within its TTL) or ``backfill`` (bounded input: exact over that input). Sinks let a backfill
    row replace the streaming row of its key (reconciliation).

    Cost: each row is priced with ``prices`` at the window's UTC start date
    (``transforms.pricing.table``): ``estimated_cost_usd`` and ``price_table_version``;
    ``estimated_cost_usd`` is None for a model without a price then (counter
    ``metric_rows_unpriced``).

    ``is_final`` is the runner's ``PaneInfo.is_last``. Only a pane fired when the window
    expires (window end + ``allowed_lateness_s``) has it; the windowing's closing behaviour is
    EMIT_ALWAYS, so Dataflow is expected to emit one, but the Python DirectRunner never does,
    so there it is always False. Do not wait for it; upsert every pane.

    Counts are exact over the input; latency percentiles come from a DDSketch (relative error
    at most 1%) and distinct users from an HLL sketch (about 1.6% standard error), both carried
    in the row so rollups can merge them.

    Args:
        window_size_s: length of the fixed event-time windows, in seconds.
        allowed_lateness_s: how long after a window's end (in event time, measured by the
            watermark) late events still update it, in seconds.
        early_firing_s: processing-time delay between speculative EARLY panes, in seconds.
        prices: the parsed price table (default: the packaged ``prices.yaml``). It travels with
            the transform, so workers never read the file.

    Raises:
        TypeError, ValueError: an argument is not a positive int.
    """

    def __init__(
        self,
        window_size_s: int = 60,
        allowed_lateness_s: int = 3600,
        early_firing_s: int = 30,
        prices: PriceTable | None = None,
    ) -> None:
        super().__init__()
        self._window_size_s = _positive_int("window_size_s", window_size_s)
        self._allowed_lateness_s = _positive_int("allowed_lateness_s", allowed_lateness_s)
        self._early_firing_s = _positive_int("early_firing_s", early_firing_s)
        self._prices = prices if prices is not None else load_price_table(DEFAULT_PRICE_TABLE)

    def expand(self, batches: beam.PCollection[EventBatch]) -> MetricOutputs:
        # Trigger: EARLY panes every early_firing_s of processing time give dashboards a
        # provisional row while the window is open; the ON_TIME pane fires when the watermark
        # passes the window end; then every late event within allowed_lateness_s fires a LATE
        # pane at once (AfterCount(1)), so corrections are not delayed. Runners evaluate the
        # trigger per batch of input for a key, so a burst of late events gives a few panes,
        # not one per event. (A processing-time late trigger was tried: the Python
        # DirectRunner labels such panes by comparing processing time with event time, and a
        # TestStream run never finishes while one is pending.) Events later than
        # allowed_lateness_s are dropped by the runner and reach no pane.
        # ACCUMULATING, not DISCARDING: every pane carries the whole window so far, sketches
        # included, so a sink that upserts by (window_start, model, region) always holds the
        # complete window, whichever panes it saw: a LATE pane replaces the row with one that
        # includes the late events. Discarding panes would make sinks add deltas, which is not
        # idempotent under retries and impossible for percentiles without merging sketches.
        # A bounded input (backfill) uses the default trigger instead: its watermark jumps to
        # the end, so each window and key fires exactly once, ON_TIME, with all its data. The
        # streaming trigger breaks there on the DirectRunner's FnApiRunner, which evaluates
        # triggers without a clock (processing-time triggers fail, BEAM-7514) and does not lift
        # the combiner for AfterWatermark without early firings (every event then goes through
        # the trigger state machine: about 35 µs more per event, measured).
        # Each bundle's events are combined per key and window first (see _PreCombineFn), then
        # the partials are windowed and merged: the same result as windowing every event.
        partials = batches | "PreCombinePerBundle" >> beam.ParDo(
            _PreCombineFn(self._window_size_s, self._prices)
        ).with_output_types(
            tuple[tuple[str, str, int], _MetricsAccumulator], **{DEAD_LETTER_TAG: DeadLetter}
        ).with_outputs(DEAD_LETTER_TAG, main="partials")
        combined = (
            partials.partials
            | "WindowIntoFixed"
            >> accumulating_windows(
                self._window_size_s,
                self._allowed_lateness_s,
                self._early_firing_s,
                bounded=batches.is_bounded,
            )
            | "CombineMetrics" >> beam.CombinePerKey(_MergePartialsFn())
        )
        source = BACKFILL if batches.is_bounded else STREAMING
        rows = combined | "FormatMetricRows" >> beam.ParDo(
            _FormatMetricRowFn(source, self._prices)
        ).with_output_types(MetricRow, **{DEAD_LETTER_TAG: DeadLetter}).with_outputs(
            DEAD_LETTER_TAG, main="rows"
        )
        # The rows' dead letters come out of the fixed windows: into the global window, as the
        # pre-combine's are, for one dead-letter output.
        left_out = (
            partials[DEAD_LETTER_TAG],
            rows[DEAD_LETTER_TAG]
            | "RewindowRowsLeftOut" >> beam.WindowInto(window.GlobalWindows()),
        ) | "FlattenLeftOut" >> beam.Flatten()
        return MetricOutputs(rows.rows, left_out)
