"""What committing metric panes does to the warehouse, the same in DuckDB and BigQuery.

Plain functions over *records* (rows in the table layout of ``warehouse_tables``), no I/O: the
sinks read the stored rows, call these, and write what they return (the embedded warehouse in
one DuckDB transaction per flush, ``pipelines.io.sinks.embedded.warehouse``; BigQuery with one
``MERGE`` per table, ``pipelines.io.sinks.gcp.bigquery``). One implementation, so the two
warehouses cannot disagree.

1. **Which pane a key keeps** (``replaces``, ADR 0007): a ``backfill`` row outranks a
   ``streaming`` one (a null source counts as streaming); within a source the later
   ``emitted_at`` wins (a relaunched job restarts ``pane_index``, not the clock), provided it is a
   different pane or different content. A pane emitted no later than the stored row, or the same
   pane with the same content (a retry, a re-run backfill), changes nothing, ``emitted_at``
   included.
2. **Freshness** (ADR 0010): a row carries a per-second histogram of its events' ingestion
   times. Stored, it is the per-second maximum over every pane committed for the key, so the
   events a winning pane adds are the seconds where it exceeds the stored histogram. Each such
   event's freshness is the commit time minus its ingestion second, recorded once in the row's
   ``freshness_counts`` (cumulative) and returned in ``visible``. Retries and replays add
   nothing: the histogram they bring is already stored.
3. **Rollups and per-minute freshness** (ADR 0011), merged by one function (``rollup``: sums
   added, latency sketches and freshness histograms merged bin by bin, HLL sketches united,
   percentiles from the merged sketch) over either of two inputs. *Recomputed* from every minute
   row of the period (``recompute_rollups``, ``recompute_freshness``): what BigQuery does at
   each commit, since its statements are not one transaction (a retried commit recomputes, and
   so repairs, what an earlier attempt left), and what retention does before it deletes minute
   rows. *Incremented* by the difference between the rows a commit replaces and the rows
   replacing them (``increment_rollups``, ``increment_freshness``): what the embedded warehouse
   does, inside the transaction that replaces them, so the two change together. Both give the
   same rows, except that a united HLL keeps the users of a replaced row (HLL cannot subtract):
   they differ only when a row loses users, after a relaunch without state, until the next
   recompute.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam

from pipelines.io.sinks.warehouse_tables import METRICS, Table
from transforms import sketches
from transforms.aggregate import BACKFILL
from transforms.deadletter import METRICS_NAMESPACE

__all__ = [
    "FRESHNESS_SLO_S",
    "FRESHNESS_THRESHOLDS_S",
    "GRAINS",
    "METRICS_NOT_CONTENT",
    "USAGE_NOT_CONTENT",
    "CommitResult",
    "PanePlan",
    "freshness_bucket",
    "increment_freshness",
    "increment_rollups",
    "latest_records",
    "pane_order",
    "plan_panes",
    "recompute_freshness",
    "recompute_rollups",
    "record_freshness",
    "replaces",
    "rollup",
    "rollup_keys",
    "touched_hours",
]

# The SLO: 99% of events visible in the warehouse within this many seconds of ingestion.
FRESHNESS_SLO_S = 120
GRAINS = {"hour": 3600, "day": 86_400}
# Columns that describe a pane, or vary between identical recomputations (the HLL bytes depend
# on merge order, a backfill's ingestion times on when it read its input), not its metrics.
METRICS_NOT_CONTENT = frozenset(
    {
        "pane_index",
        "pane_timing",
        "is_final",
        "emitted_at",
        "users_hll",
        "distinct_users_approx",
        "ingestion_counts",
        "freshness_counts",
    }
)
USAGE_NOT_CONTENT = frozenset({"pane_index", "pane_timing", "emitted_at"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- which pane wins -----------------------------------------------------------------------


def _rank(record: dict[str, Any]) -> int:
    return 1 if record.get("source") == BACKFILL else 0


def pane_order(record: dict[str, Any]) -> tuple:
    """What orders two panes of a key: source rank, then emission time, then pane index."""
    return _rank(record), record["emitted_at"], record["pane_index"]


def replaces(
    new: dict[str, Any], stored: dict[str, Any] | None, not_content: frozenset[str], key: tuple
) -> bool:
    """Whether record ``new`` replaces ``stored`` (None: nothing stored) under the upsert rule
    of the module docstring. ``not_content``: the columns that do not count as content."""
    if stored is None:
        return True
    if _rank(new) != _rank(stored):
        return _rank(new) > _rank(stored)
    if new["emitted_at"] <= stored["emitted_at"]:
        return False
    if new["pane_index"] != stored["pane_index"]:
        return True
    skip = not_content | set(key)
    return any(new[c] != stored[c] for c in new if c not in skip)


def latest_records(table: Table, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record per key (source, then emission time, then pane index), in first-seen
    key order: an upsert statement may touch a key only once."""
    newest: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = tuple(record[c] for c in table.key)
        current = newest.get(key)
        if current is None or pane_order(record) > pane_order(current):
            newest[key] = record
    return list(newest.values())


# --- freshness -----------------------------------------------------------------------------


def freshness_bucket(latency_s: float) -> int:
    """The freshness bucket of a latency: its lower bound in whole seconds below 600 s, in
    10 s steps below 3,600 s, in 60 s steps beyond (negative latencies, from clock skew,
    count as 0)."""
    seconds = max(math.floor(latency_s), 0)
    if seconds < 600:
        return seconds
    if seconds < 3600:
        return seconds - seconds % 10
    return seconds - seconds % 60


def _bins(value: Any, name: str) -> dict[int, int]:
    return {b[name]: b["count"] for b in value or ()}


def _ingestion_added(
    new: list[dict[str, int]], stored: list[dict[str, int]] | None
) -> tuple[list[dict[str, int]], dict[int, int]]:
    """The per-second maximum of two ingestion histograms, and what ``new`` adds to ``stored``."""
    merged = _bins(stored, "epoch_s")
    added = {}
    for second, count in _bins(new, "epoch_s").items():
        before = merged.get(second, 0)
        if count > before:
            added[second] = count - before
            merged[second] = count
    return [{"epoch_s": s, "count": c} for s, c in sorted(merged.items())], added


def _freshness_of(added: dict[int, int], committed_at: dt.datetime) -> Counter:
    committed_s = (committed_at - _EPOCH).total_seconds()
    out: Counter = Counter()
    for second, count in added.items():
        out[freshness_bucket(committed_s - second)] += count
    return out


# Cumulative counters of events visible within these many seconds (the SLO's threshold is one
# of them; Terraform picks it with var.freshness_slo_s).
FRESHNESS_THRESHOLDS_S = (60, FRESHNESS_SLO_S, 300)


def record_freshness(visible: dict[int, int]) -> None:
    """Records a commit's newly visible events as Beam metrics (namespace ``genai``): the
    distribution ``freshness_s`` (one value per event, its bucket's lower bound), the counter
    ``freshness_events`` and ``freshness_events_within_<N>s`` for ``FRESHNESS_THRESHOLDS_S``
    (bucket below N). On Dataflow they are the user metrics the SLO alerts read."""
    if not visible:
        return
    distribution = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "freshness_s")
    counter = beam.metrics.Metrics.counter
    for latency_s, events in visible.items():
        for _ in range(events):
            distribution.update(latency_s)
    counter(METRICS_NAMESPACE, "freshness_events").inc(sum(visible.values()))
    for threshold in FRESHNESS_THRESHOLDS_S:
        within = sum(n for s, n in visible.items() if s < threshold)
        if within:
            counter(METRICS_NAMESPACE, f"freshness_events_within_{threshold}s").inc(within)


def _freshness_list(counts: dict[int, int]) -> list[dict[str, int]]:
    return [{"latency_s": s, "count": c} for s, c in sorted(counts.items()) if c]


# --- planning a commit ------------------------------------------------------------------------


def _key(record: dict[str, Any]) -> tuple:
    return tuple(record[c] for c in METRICS.key)


def _period_start(moment: dt.datetime, grain: str) -> dt.datetime:
    seconds = int((moment - _EPOCH).total_seconds())
    return _EPOCH + dt.timedelta(seconds=seconds - seconds % GRAINS[grain])


class PanePlan(NamedTuple):
    """What a batch of panes does to ``metrics_minute``: the rows to write (winners, with their
    merged ingestion histograms and cumulative freshness), each with the row it replaces (None
    for a new key), and the events they make visible per freshness bucket."""

    winners: list[dict[str, Any]]
    replaced: list[dict[str, Any] | None]
    visible: dict[int, int]


def plan_panes(
    incoming: Sequence[dict[str, Any]],
    stored: dict[tuple, dict[str, Any]],
    committed_at: dt.datetime,
) -> PanePlan:
    """Applies the pane rule and measures freshness. ``incoming``: records, one per key
    (``latest_records``); ``stored``: the stored records of those keys, by key."""
    winners, replaced = [], []
    visible: Counter = Counter()
    for record in incoming:
        old = stored.get(_key(record))
        if not replaces(record, old, METRICS_NOT_CONTENT, METRICS.key):
            continue
        record = dict(record)
        merged, added = _ingestion_added(
            record["ingestion_counts"], old["ingestion_counts"] if old else None
        )
        fresh = _freshness_of(added, committed_at)
        previous = _bins(old["freshness_counts"] if old else None, "latency_s")
        record["ingestion_counts"] = merged
        record["freshness_counts"] = _freshness_list(Counter(previous) + fresh)
        visible.update(fresh)
        winners.append(record)
        replaced.append(old)
    return PanePlan(winners, replaced, dict(visible))


def touched_hours(records: Iterable[dict[str, Any]]) -> set[tuple[dt.datetime, str, str]]:
    """The (hour, model, region) of minute records."""
    return {(_period_start(r["window_start"], "hour"), r["model"], r["region"]) for r in records}


# --- rollups -------------------------------------------------------------------------------------

_MAPS = ("policy_flag_counts", "data_class_counts", "redaction_counts")


def _signed(counts: Counter, pairs: Any, key: str, count: str, weight: int) -> None:
    for entry in pairs or ():
        counts[entry[key]] += weight * entry[count]


def rollup(
    grain: str,
    key: tuple[dt.datetime, str, str],
    parts: Iterable[tuple[dict[str, Any], int]],
    computed_at: dt.datetime,
) -> dict[str, Any] | None:
    """The ``grain`` rollup record of ``key`` (period start, model, region) from ``parts``:
    minute records or rollup records, each with a weight (+1 to add it, -1 to take out a row it
    replaces). Sums and counts are weighted; HLL sketches of the parts added are united. None
    when nothing is left (no window)."""
    sums: Counter = Counter()
    cost = 0.0
    bins: Counter = Counter()
    maps = {name: Counter() for name in _MAPS}
    freshness: Counter = Counter()
    sketches_added = []
    accuracy = sketches.RELATIVE_ACCURACY
    for record, weight in parts:
        is_rollup = "grain" in record
        windows = record["window_count"] if is_rollup else 1
        if is_rollup:
            unpriced, backfill = record["unpriced_window_count"], record["backfill_window_count"]
        else:
            unpriced = int(record["estimated_cost_usd"] is None)
            backfill = int(record.get("source") == BACKFILL)
        sums["window_count"] += weight * windows
        sums["unpriced_window_count"] += weight * unpriced
        sums["backfill_window_count"] += weight * backfill
        for name in ("request_count", "token_sum", "prompt_token_sum", "completion_token_sum"):
            sums[name] += weight * record[name]
        sums["unsplit_token_sum"] += weight * (record.get("unsplit_token_sum") or 0)
        cost += weight * (record["estimated_cost_usd"] or 0.0)
        _signed(bins, record["latency_sketch_bins"], "index", "count", weight)
        for name in _MAPS:
            _signed(maps[name], record[name], "key", "value", weight)
        _signed(freshness, record.get("freshness_counts"), "latency_s", "count", weight)
        if weight > 0:
            sketches_added.append(record["users_hll"])
        accuracy = record["latency_sketch_relative_accuracy"] or accuracy
    if sums["window_count"] <= 0:
        return None
    merged_bins = {i: n for i, n in sorted(bins.items()) if n > 0}
    p50, p95, p99 = sketches.latency_quantiles(merged_bins, (0.5, 0.95, 0.99))
    users = sketches.merge_users(sketches.deserialize_users(h) for h in sketches_added)
    priced = sums["window_count"] - sums["unpriced_window_count"]
    period_start, model, region = key
    return {
        "grain": grain,
        "period_start": period_start,
        "period_end": period_start + dt.timedelta(seconds=GRAINS[grain]),
        "model": model,
        "region": region,
        **{name: int(sums[name]) for name in _ROLLUP_SUMS},
        "estimated_cost_usd": round(cost, 9) if priced > 0 else None,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "latency_sketch_bins": [{"index": i, "count": n} for i, n in merged_bins.items()],
        "latency_sketch_relative_accuracy": accuracy,
        "distinct_users_approx": sketches.users_estimate(users),
        "users_hll": sketches.serialize_users(users),
        **{
            name: [{"key": k, "value": n} for k, n in sorted(maps[name].items()) if n > 0]
            for name in _MAPS
        },
        "freshness_counts": _freshness_list({s: n for s, n in freshness.items() if n > 0}),
        "computed_at": computed_at,
    }


_ROLLUP_SUMS = (
    "window_count",
    "request_count",
    "token_sum",
    "prompt_token_sum",
    "completion_token_sum",
    "unsplit_token_sum",
    "unpriced_window_count",
    "backfill_window_count",
)


def _day_key(hour_key: tuple) -> tuple:
    return (_period_start(hour_key[0], "day"), *hour_key[1:])


def recompute_rollups(
    minute_records: Iterable[dict[str, Any]],
    hour_rollups: Iterable[dict[str, Any]],
    hours: Iterable[tuple[dt.datetime, str, str]],
    computed_at: dt.datetime,
) -> list[dict[str, Any]]:
    """The hourly rollups of ``hours`` recomputed from ``minute_records`` (every minute row of
    those hours), then the daily rollups of their days from the day's hourly rollups
    (``hour_rollups``: the stored ones of those days, the recomputed ones replacing them)."""
    hours = set(hours)
    by_hour: dict[tuple, list] = {key: [] for key in hours}
    for record in minute_records:
        key = (_period_start(record["window_start"], "hour"), record["model"], record["region"])
        if key in by_hour:
            by_hour[key].append((record, 1))
    fresh_hours = {
        key: rollup("hour", key, parts, computed_at) for key, parts in sorted(by_hour.items())
    }
    days = {_day_key(key) for key in hours}
    by_day: dict[tuple, dict[tuple, dict]] = {key: {} for key in days}
    for record in hour_rollups:
        key = (record["period_start"], record["model"], record["region"])
        if _day_key(key) in by_day and key not in fresh_hours:
            by_day[_day_key(key)][key] = record
    for key, record in fresh_hours.items():
        if record is not None:
            by_day[_day_key(key)][key] = record
    fresh_days = [
        rollup("day", key, ((r, 1) for r in parts.values()), computed_at)
        for key, parts in sorted(by_day.items())
    ]
    return [r for r in [*fresh_hours.values(), *fresh_days] if r is not None]


def increment_rollups(
    plan: PanePlan,
    stored_rollups: dict[tuple, dict[str, Any]],
    computed_at: dt.datetime,
) -> list[dict[str, Any]]:
    """The hourly and daily rollups the plan's rows change, from the stored rollups (by
    ``(grain, period_start, model, region)``) plus the winners minus the rows they replace."""
    deltas: dict[tuple, list] = {}
    for new, old in zip(plan.winners, plan.replaced, strict=True):
        (hour_key,) = touched_hours([new])
        for grain, key in (("hour", hour_key), ("day", _day_key(hour_key))):
            parts = deltas.setdefault((grain, *key), [])
            parts.append((new, 1))
            if old is not None:
                parts.append((old, -1))
    out = []
    for (grain, *key), parts in sorted(deltas.items()):
        stored = stored_rollups.get((grain, *key))
        base = [(stored, 1)] if stored is not None else []
        record = rollup(grain, tuple(key), [*base, *parts], computed_at)
        if record is not None:
            out.append(record)
    return out


def rollup_keys(plan: PanePlan) -> list[tuple]:
    """The (grain, period_start, model, region) of the rollups ``increment_rollups`` changes."""
    keys = set()
    for hour_key in touched_hours(plan.winners):
        keys.add(("hour", *hour_key))
        keys.add(("day", *_day_key(hour_key)))
    return sorted(keys)


# --- per-minute freshness ----------------------------------------------------------------------


def _freshness_rows(
    totals: dict[tuple[dt.datetime, int], int], computed_at: dt.datetime
) -> list[dict[str, Any]]:
    return [
        {"window_start": w, "latency_s": s, "events": n, "computed_at": computed_at}
        for (w, s), n in sorted(totals.items())
    ]


def recompute_freshness(
    minute_records: Iterable[dict[str, Any]],
    windows: Iterable[dt.datetime],
    computed_at: dt.datetime,
) -> list[dict[str, Any]]:
    """``freshness_minute`` of ``windows`` from every minute row of them (all models and
    regions)."""
    windows = set(windows)
    totals: Counter = Counter()
    for record in minute_records:
        if record["window_start"] in windows:
            for entry in record.get("freshness_counts") or ():
                totals[(record["window_start"], entry["latency_s"])] += entry["count"]
    return _freshness_rows(totals, computed_at)


def increment_freshness(
    plan: PanePlan, stored: Iterable[dict[str, Any]], computed_at: dt.datetime
) -> list[dict[str, Any]]:
    """The ``freshness_minute`` rows the plan changes: the stored rows of its windows plus the
    winners' freshness minus that of the rows they replace."""
    totals: Counter = Counter()
    changed = set()
    for new, old in zip(plan.winners, plan.replaced, strict=True):
        for record, weight in ((new, 1), (old, -1)):
            for entry in (record or {}).get("freshness_counts") or ():
                key = (new["window_start"], entry["latency_s"])
                totals[key] += weight * entry["count"]
                changed.add(key)
    for row in stored:
        key = (row["window_start"], row["latency_s"])
        if key in changed:
            totals[key] += row["events"]
    return _freshness_rows({k: totals[k] for k in changed if totals[k] > 0}, computed_at)


class CommitResult(NamedTuple):
    """What a commit wrote: the minute rows that replaced (or joined) the stored ones, the
    rollups (hourly and daily) and per-minute freshness rows it wrote, and the events it made
    visible per freshness bucket (``latency_s`` -> events)."""

    minute_rows: list[dict[str, Any]]
    rollups: list[dict[str, Any]]
    freshness_rows: list[dict[str, Any]]
    visible: dict[int, int]
