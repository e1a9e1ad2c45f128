"""Hourly usage per pseudonymous user and model version: ``AggregateUsage``.

Input: deduplicated ``EventBatch`` elements (each event carries its event time), bounded
(backfill) or unbounded (streaming). Output: one ``UsageRow`` per pane of each event-time hour
and ``(user_key, model, model_version)``: requests, tokens, latency sum, requests carrying a
policy flag, and the estimated cost from the price table. Panes accumulate, so sinks upsert by
key with the rule of the metric rows (a backfill row outranks a streaming one, then the later
emission wins).

Cardinality: one row per active (user, model, version) and hour, so it grows with the users,
not with the requests; the metrics of ``AggregateMetrics`` stay per (model, region). Rows hold
only the pseudonym ``user_key`` (never the user id) and numbers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, WindowedValue

from transforms.aggregate import BACKFILL, STREAMING
from transforms.elements import EventBatch, UsageRow, event_micros, micros_to_datetime
from transforms.pricing.table import PriceTable, estimate_cost_usd, price_on
from transforms.windowing import PANE_TIMINGS, accumulating_windows

__all__ = ["AggregateUsage", "usage_of"]

_HOUR_S = 3600
_HOUR_US = _HOUR_S * 1_000_000
_GLOBAL = (window.GlobalWindow(),)
_MAX_PARTIALS = 16_384
# Accumulator: [requests, tokens, prompt tokens, completion tokens, unsplit tokens,
# latency ms sum, requests with a policy flag]; a plain list, summed element by element.
_FIELDS = 7


def usage_of(
    token_count: int,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    latency_ms: float,
    flagged: bool,
) -> list[Any]:
    """One request's usage accumulator. Tokens without a prompt/completion split are what
    ``token_count`` has beyond the part reported, as in the metric rows."""
    unsplit = 0
    if prompt_tokens is None or completion_tokens is None:
        unsplit = max(token_count - (prompt_tokens or 0) - (completion_tokens or 0), 0)
    return [
        1,
        token_count,
        prompt_tokens or 0,
        completion_tokens or 0,
        unsplit,
        latency_ms,
        1 if flagged else 0,
    ]


def _add(into: list[Any], other: list[Any]) -> list[Any]:
    for i in range(_FIELDS):
        into[i] += other[i]
    return into


class _SumUsageFn(beam.CombineFn):
    """Sums usage accumulators (partials or single requests) element by element."""

    def create_accumulator(self) -> list[Any]:
        return [0, 0, 0, 0, 0, 0.0, 0]

    def add_input(self, acc: list[Any], partial: list[Any]) -> list[Any]:
        return _add(acc, partial)

    def merge_accumulators(self, accumulators: Any) -> list[Any]:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            _add(merged, acc)
        return merged

    def extract_output(self, acc: list[Any]) -> list[Any]:
        return list(acc)


class _PreCombineUsageFn(beam.DoFn):
    """Sums a bundle's events per (user_key, model, model_version, hour start), so the windowed
    combine sees one partial per bundle and key; each partial is timestamped with its earliest
    event, in the global window (the ``WindowInto`` after it puts it in its hour)."""

    def start_bundle(self):
        self._partials: dict[tuple, list] = {}

    def process(self, batch: EventBatch):
        partials = self._partials
        for event in batch.events:
            micros = event_micros(event.event_time)
            key = (
                event.user_key,
                event.model,
                event.model_version or "",
                micros - micros % _HOUR_US,
            )
            usage = usage_of(
                event.token_count,
                event.prompt_tokens,
                event.completion_tokens,
                event.latency_ms,
                bool(event.policy_flags),
            )
            entry = partials.get(key)
            if entry is None:
                partials[key] = [usage, micros]
            else:
                _add(entry[0], usage)
                entry[1] = min(entry[1], micros)
        if len(partials) >= _MAX_PARTIALS:
            yield from self.finish_bundle()

    def finish_bundle(self):
        for key, (usage, earliest) in self._partials.items():
            yield WindowedValue((key, usage), Timestamp(micros=earliest), _GLOBAL)
        self._partials = {}


class _FormatUsageRowFn(beam.DoFn):
    def __init__(self, source: str, prices: PriceTable):
        self._source = source
        self._prices = prices

    def process(self, element, pane: PaneInfo = beam.DoFn.PaneInfoParam):
        (user_key, model, model_version, start_us), acc = element
        hour_start = micros_to_datetime(start_us)
        requests, tokens, prompt, completion, unsplit, latency_sum, flagged = acc
        price = price_on(self._prices, model, hour_start.date())
        cost = None if price is None else estimate_cost_usd(price, prompt, completion, unsplit)
        yield UsageRow(
            hour_start=hour_start,
            user_key=user_key,
            model=model,
            model_version=model_version,
            request_count=requests,
            token_sum=tokens,
            prompt_token_sum=prompt,
            completion_token_sum=completion,
            unsplit_token_sum=unsplit,
            latency_ms_sum=float(latency_sum),
            policy_flagged_count=flagged,
            estimated_cost_usd=cost,
            price_table_version=self._prices.version,
            pane_timing=PANE_TIMINGS[pane.timing],
            pane_index=pane.index,
            emitted_at=dt.datetime.now(dt.UTC),
            source=self._source,
        )


class AggregateUsage(beam.PTransform):
    """Computes usage per event-time hour and ``(user_key, model, model_version)``.

    Input: a ``PCollection[EventBatch]`` of deduplicated events in the global window, bounded
    or unbounded. Output: ``PCollection[UsageRow]``, one row per pane of each hour and key with
    events (``model_version`` empty when the gateway reported none).

    Panes (unbounded input): an EARLY pane every ``early_firing_s`` of processing time while
    the hour is open, an ON_TIME pane when the watermark passes its end, then a LATE pane per
    batch of late events within ``allowed_lateness_s``; later events are dropped by the runner
    (the raw archive keeps them; a reconciliation recomputes the hour). ACCUMULATING, for the
    same reason as the metric panes: each row holds the hour so far, so upserting the newest
    pane per key is idempotent. The early firings are less frequent than the metrics' (default
    300 s), because usage feeds billing-style reports, not the freshness SLO, and every pane is
    a row per active user. A bounded input gets one complete pane per hour and key.

    Args:
        prices: the parsed price table (the cost of an hour is priced on its UTC date).
        allowed_lateness_s: as in ``AggregateMetrics``, in seconds.
        early_firing_s: processing-time delay between EARLY panes, in seconds.
    """

    def __init__(
        self, prices: PriceTable, allowed_lateness_s: int = 3600, early_firing_s: int = 300
    ):
        super().__init__()
        for name, value in (
            ("allowed_lateness_s", allowed_lateness_s),
            ("early_firing_s", early_firing_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int (seconds), got {value!r}")
        self._prices = prices
        self._allowed_lateness_s = allowed_lateness_s
        self._early_firing_s = early_firing_s

    def expand(self, batches):
        combined = (
            batches
            | "PreCombineUsagePerBundle"
            >> beam.ParDo(_PreCombineUsageFn()).with_output_types(
                tuple[tuple[str, str, str, int], list[Any]]
            )
            # The trigger and mode of AggregateMetrics (see the comments there), with early
            # firings every early_firing_s; a bounded input gets one pane per hour and key.
            | "WindowIntoHours"
            >> accumulating_windows(
                _HOUR_S,
                self._allowed_lateness_s,
                self._early_firing_s,
                bounded=batches.is_bounded,
            )
            | "CombineUsage" >> beam.CombinePerKey(_SumUsageFn())
        )
        source = BACKFILL if batches.is_bounded else STREAMING
        return combined | "FormatUsageRows" >> beam.ParDo(
            _FormatUsageRowFn(source, self._prices)
        ).with_output_types(UsageRow)
