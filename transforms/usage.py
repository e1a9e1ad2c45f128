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
import zlib
from typing import Any

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfo, WindowedValue

from transforms.aggregate import BACKFILL, STREAMING
from transforms.elements import EventBatch, UsageRow, event_micros, micros_to_datetime
from transforms.pricing.table import PriceTable, estimate_cost_usd, price_on
from transforms.windowing import PANE_TIMINGS, accumulating_windows

__all__ = ["USAGE_SHARDS", "AggregateUsage", "changed_users", "shard_of_user", "usage_of"]

_HOUR_S = 3600
_HOUR_US = _HOUR_S * 1_000_000
_GLOBAL = (window.GlobalWindow(),)
_MAX_PARTIALS = 16_384  # (user, model, version) entries a bundle holds before it emits them
# Each hour is combined in this many shards of users, each a dict per (user, model, version):
# the windowing and trigger machinery then sees a few keys per bundle instead of one per user
# (on the local runner it cost a third of a stream's CPU per user key), and Dataflow still
# spreads an hour over this many workers.
USAGE_SHARDS = 16
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


# (user_key, model, model_version) -> usage accumulator: what one shard of an hour holds.
_ByUser = dict[tuple[str, str, str], list[Any]]


def shard_of_user(user_key: str) -> int:
    """The shard of an hour that a user's usage is combined in (stable across runs)."""
    return zlib.crc32(user_key.encode("utf-8", "surrogatepass")) % USAGE_SHARDS


def _merge(into: _ByUser, other: _ByUser) -> _ByUser:
    for key, usage in other.items():
        entry = into.get(key)
        if entry is None:
            into[key] = list(usage)
        else:
            _add(entry, usage)
    return into


class _SumUsageFn(beam.CombineFn):
    """Merges the per-user usage of one shard of an hour (partials of bundles)."""

    def create_accumulator(self) -> _ByUser:
        return {}

    def add_input(self, acc: _ByUser, partial: _ByUser) -> _ByUser:
        return _merge(acc, partial)

    def merge_accumulators(self, accumulators: Any) -> _ByUser:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            _merge(merged, acc)
        return merged

    def extract_output(self, acc: _ByUser) -> _ByUser:
        return {key: list(usage) for key, usage in acc.items()}


class _PreCombineUsageFn(beam.DoFn):
    """Sums a bundle's events per (user_key, model, model_version) within each (hour start,
    shard), so the windowed combine sees one partial per bundle, hour and shard; each partial
    is timestamped with its earliest event, in the global window (the ``WindowInto`` after it
    puts it in its hour)."""

    def start_bundle(self):
        self._partials: dict[tuple[int, int], list] = {}
        self._entries = 0

    def process(self, batch: EventBatch):
        partials = self._partials
        for event in batch.events:
            micros = event_micros(event.event_time)
            key = (micros - micros % _HOUR_US, shard_of_user(event.user_key))
            user = (event.user_key, event.model, event.model_version or "")
            usage = usage_of(
                event.token_count,
                event.prompt_tokens,
                event.completion_tokens,
                event.latency_ms,
                bool(event.policy_flags),
            )
            partial = partials.get(key)
            if partial is None:
                partial = partials[key] = [{}, micros]
            by_user = partial[0]
            entry = by_user.get(user)
            if entry is None:
                by_user[user] = usage
                self._entries += 1
            else:
                _add(entry, usage)
            partial[1] = min(partial[1], micros)
        if self._entries >= _MAX_PARTIALS:
            yield from self.finish_bundle()

    def finish_bundle(self):
        for key, (by_user, earliest) in self._partials.items():
            yield WindowedValue((key, by_user), Timestamp(micros=earliest), _GLOBAL)
        self._partials = {}
        self._entries = 0


# A pane of one shard of an hour: ((hour start µs, shard), (pane timing, pane index, users)).
_ShardPane = tuple[tuple[int, int], tuple[str, int, _ByUser]]


def _tag_pane(element, pane: PaneInfo = beam.DoFn.PaneInfoParam):
    """Carries the pane's timing and index in the element, past the keyed step below (whose
    outputs a runner need not give the input's pane)."""
    key, by_user = element
    return key, (PANE_TIMINGS[pane.timing], pane.index, by_user)


def changed_users(by_user: _ByUser, emitted: dict[tuple[str, str, str], int]) -> _ByUser:
    """The entries of an accumulating pane ``by_user`` that differ from what the shard last
    emitted: ``emitted`` maps a (user, model, version) to the request count of its last row.
    Every request adds one to the count and panes accumulate, so an unchanged count is an
    unchanged row."""
    return {user: usage for user, usage in by_user.items() if emitted.get(user) != usage[0]}


class _KeepChangedUsersFn(beam.DoFn):
    """Streaming only: keeps, of each pane of a shard of an hour, the users whose usage changed
    since the shard's last pane. Without it, every pane re-emits the whole shard: a late event
    (a LATE pane per batch of late events, for as long as the allowed lateness) then costs a
    row per user of its shard, not one. The rows left out are the same rows again, already
    upserted. State per (hour, shard): the request count last emitted per (user, model,
    version); a timer clears it when the hour expires (its end plus the allowed lateness).
    Lost state (a relaunch) only makes the next pane emit its whole shard again."""

    EMITTED = ReadModifyWriteStateSpec("emitted", FastPrimitivesCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, allowed_lateness_s: int):
        self._allowed_lateness = Duration(seconds=allowed_lateness_s)

    def process(
        self,
        element: _ShardPane,
        window=beam.DoFn.WindowParam,
        emitted=beam.DoFn.StateParam(EMITTED),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        key, (timing, index, by_user) = element
        last = emitted.read() or {}
        changed = changed_users(by_user, last)
        if not changed:
            return
        for user, usage in changed.items():
            last[user] = usage[0]
        emitted.write(last)
        expiry.set(window.max_timestamp() + self._allowed_lateness)
        yield key, (timing, index, changed)

    @on_timer(EXPIRY)
    def _expire(self, emitted=beam.DoFn.StateParam(EMITTED)):
        emitted.clear()


class _FormatUsageRowFn(beam.DoFn):
    """One pane of one shard of an hour: a row per (user, model, model version) in it."""

    def __init__(self, source: str, prices: PriceTable):
        self._source = source
        self._prices = prices

    def process(self, element: _ShardPane):
        (start_us, _shard), (pane_timing, pane_index, by_user) = element
        hour_start = micros_to_datetime(start_us)
        emitted_at = dt.datetime.now(dt.UTC)
        for (user_key, model, model_version), acc in sorted(by_user.items()):
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
                pane_timing=pane_timing,
                pane_index=pane_index,
                emitted_at=emitted_at,
                source=self._source,
            )


class AggregateUsage(beam.PTransform):
    """Computes usage per event-time hour and ``(user_key, model, model_version)``.

    Input: a ``PCollection[EventBatch]`` of deduplicated events in the global window, bounded
    or unbounded. Output: ``PCollection[UsageRow]``, one row per pane of each hour and key with
    events (``model_version`` empty when the gateway reported none).

    Panes (unbounded input): the usage of an hour is combined in ``USAGE_SHARDS`` shards of
    users (``shard_of_user``); each shard fires an EARLY pane every ``early_firing_s`` of
    processing time while the hour is open, an ON_TIME pane when the watermark passes its end,
    then a LATE pane per batch of late events within ``allowed_lateness_s``; later events are
    dropped by the runner (the raw archive keeps them; a reconciliation recomputes the hour).
    Panes accumulate (for the same reason as the metric panes: each row holds the hour so far,
    so upserting the newest row per key is idempotent), and a pane holds a row for each (user,
    model, version) of its shard whose usage changed since the shard's last pane: the others'
    rows would be the same again. So a late event costs one row, not one per user of its shard,
    and the stored row of a complete hour may be an EARLY pane's when nothing came after it. A
    row's pane index is its shard's. The early firings are less frequent than the metrics'
    (default 300 s), because usage feeds billing-style reports, not the freshness SLO. A
    bounded input gets one complete pane per hour and shard: one row per key.

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
            >> beam.ParDo(_PreCombineUsageFn()).with_output_types(tuple[tuple[int, int], _ByUser])
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
        panes = combined | "TagPanes" >> beam.Map(_tag_pane).with_output_types(_ShardPane)
        if not batches.is_bounded:
            panes = panes | "KeepChangedUsers" >> beam.ParDo(
                _KeepChangedUsersFn(self._allowed_lateness_s)
            ).with_output_types(_ShardPane)
        source = BACKFILL if batches.is_bounded else STREAMING
        return panes | "FormatUsageRows" >> beam.ParDo(
            _FormatUsageRowFn(source, self._prices)
        ).with_output_types(UsageRow)
