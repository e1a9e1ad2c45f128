"""End-of-run summary: the counters of the run and what the warehouse holds from it."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import NamedTuple

from pipelines.io.sinks.embedded import AUDIT_DB, WAREHOUSE_DB
from pipelines.io.sinks.metrics_commit import FRESHNESS_SLO_S
from pipelines.local.tally import FRESHNESS_PREFIX, read_tally

__all__ = [
    "EXAMPLE_QUERY",
    "Summary",
    "new_run_id",
    "print_example_query",
    "print_summary",
    "summarize",
]


class Summary(NamedTuple):
    output_root: str
    events_read: int
    written: int
    duplicates: int
    conflicts: int  # duplicate_conflict: another copy of an id written, with other content
    dead_letters: dict[str, int]
    redactions: dict[str, int]
    metric_rows: int
    events_in_metrics: int
    # Freshness (ADR 0010): per event, the commit of the first warehouse row counting it minus
    # its ingestion time; nearest-rank percentiles of the buckets' lower bounds (whole seconds).
    freshness_p50_s: float | None
    freshness_p99_s: float | None
    freshness_events: int  # events whose freshness was measured (made visible by this run)
    freshness_within_slo: int  # of them, visible within FRESHNESS_SLO_S
    elapsed_s: float
    sink_dead_letters: dict[str, int]  # rows a Google Cloud sink could not write, per reason

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def late_dropped(self) -> int:
        """Written events the metrics do not count: later than the allowed lateness."""
        return self.written - self.events_in_metrics

    @property
    def balanced(self) -> bool:
        """The counting identity: every input in exactly one bucket."""
        return self.events_read == (
            self.written + self.duplicates + self.conflicts + self.dead_lettered
        )


def _quantiles(histogram: dict[int, int], quantiles: tuple[float, ...]) -> list[float | None]:
    """Nearest-rank quantiles of a {value: count} histogram (None when it is empty)."""
    total = sum(histogram.values())
    if not total:
        return [None] * len(quantiles)
    ordered = sorted(histogram.items())
    results = []
    for q in quantiles:
        rank, seen = max(1, math.ceil(q * total)), 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                results.append(float(value))
                break
    return results


def _freshness(counters: dict[str, int]) -> dict[int, int]:
    """The run's freshness histogram: events by freshness bucket (``latency_s``)."""
    return {
        int(name.removeprefix(FRESHNESS_PREFIX)): n
        for name, n in counters.items()
        if name.startswith(FRESHNESS_PREFIX)
    }


def new_run_id(started_at: dt.datetime) -> str:
    return started_at.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def summarize(output_root: str, run_id: str, started_at: dt.datetime) -> Summary:
    """Builds the summary of the finished run ``run_id`` started at ``started_at``."""
    counters = read_tally(output_root, run_id)
    freshness = _freshness(counters)
    p50, p99 = _quantiles(freshness, (0.5, 0.99))
    return Summary(
        output_root=output_root,
        events_read=counters.get("read", 0),
        written=counters.get("outcome.written", 0),
        duplicates=counters.get("outcome.duplicate", 0),
        conflicts=counters.get("outcome.duplicate_conflict", 0),
        dead_letters={
            name.removeprefix("dead_letter."): n
            for name, n in sorted(counters.items())
            if name.startswith("dead_letter.")
        },
        redactions={
            name.removeprefix("redactions."): n
            for name, n in sorted(counters.items())
            if name.startswith("redactions.")
        },
        metric_rows=counters.get("metrics.windows", 0),
        events_in_metrics=counters.get("metrics.requests_counted", 0),
        freshness_p50_s=p50,
        freshness_p99_s=p99,
        freshness_events=sum(freshness.values()),
        freshness_within_slo=sum(n for s, n in freshness.items() if s < FRESHNESS_SLO_S),
        elapsed_s=(dt.datetime.now(dt.UTC) - started_at).total_seconds(),
        sink_dead_letters={
            name.removeprefix("sink_dead_letter."): n
            for name, n in sorted(counters.items())
            if name.startswith("sink_dead_letter.")
        },
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _slo(s: Summary) -> str:
    """The SLO line: the share of events visible within the SLO, against its 99% target."""
    if not s.freshness_events:
        return "n/a (no event was made visible in the warehouse by this run)"
    share = s.freshness_within_slo / s.freshness_events
    verdict = "met" if share >= 0.99 else "MISSED"
    return f"{share:.2%} of events visible within {FRESHNESS_SLO_S} s (target 99%: {verdict})"


def print_summary(summary: Summary, outputs: list[str] | None = None) -> None:
    """Prints the summary for a person (stdout); ``outputs`` lists where the outputs are
    (default: the embedded layout under the output root)."""
    s = summary
    rate = s.events_read / s.elapsed_s if s.elapsed_s > 0 else 0.0
    lines = [
        "",
        "=== run summary ===",
        f"events read        {s.events_read:>10}   ({rate:.0f}/s over {s.elapsed_s:.1f} s)",
        f"  written          {s.written:>10}",
        f"  duplicates       {s.duplicates:>10}",
        f"  conflicts        {s.conflicts:>10}   (same event_id, other content)",
        f"  dead-lettered    {s.dead_lettered:>10}",
    ]
    lines += [f"    {reason:<32} {n:>6}" for reason, n in s.dead_letters.items()]
    if s.sink_dead_letters:
        lines.append(
            "rows dead-lettered (not inputs: rows a sink could not write or encode, events"
            " left out of the metrics):"
        )
        lines += [f"    {reason:<32} {n:>6}" for reason, n in s.sink_dead_letters.items()]
    check = "OK" if s.balanced else "MISMATCH"
    lines += [
        f"read = written + duplicates + conflicts + dead-lettered: {check}",
        f"late-dropped from metrics {s.late_dropped:>6}   (written, beyond the allowed lateness)",
        "redactions by info type:",
    ]
    lines += [f"    {info_type:<32} {n:>6}" for info_type, n in s.redactions.items()] or [
        "    (none)"
    ]
    lines += [
        f"metric rows        {s.metric_rows:>10}   (windows x model x region this run)",
        f"freshness p50/p99  {_fmt(s.freshness_p50_s)} / {_fmt(s.freshness_p99_s)}"
        f"   (ingestion -> committed in the warehouse, {s.freshness_events} events)",
        f"freshness SLO      {_slo(s)}",
        "outputs:",
    ]
    lines += [
        f"    {line}"
        for line in outputs
        or [
            f"raw archive      {os.path.join(s.output_root, 'raw')}/event_date=*/region=*/",
            f"dead letters     {os.path.join(s.output_root, 'dead_letter')}/dt=*/",
            f"metrics          {os.path.join(s.output_root, WAREHOUSE_DB)}  (table metrics_minute)",
            f"audit log        {os.path.join(s.output_root, AUDIT_DB)}  (table audit_log)",
        ]
    ]
    print("\n".join(lines), flush=True)


EXAMPLE_QUERY = """SELECT day, model, sum(request_count) AS requests, sum(token_sum) AS tokens,
       max(latency_p95_ms) AS worst_region_p95_ms
FROM metrics_daily GROUP BY day, model ORDER BY day, requests DESC"""


def print_example_query(output_root: str) -> None:
    """Prints one example query against the warehouse and its result."""
    import duckdb

    path = os.path.join(output_root, WAREHOUSE_DB)
    if not os.path.exists(path):
        return
    with duckdb.connect(path, read_only=True) as db:
        result = db.execute(EXAMPLE_QUERY).df()
    print(f"\nexample query (duckdb {path}):\n{EXAMPLE_QUERY}\n")
    print(result.to_string(index=False) if len(result) else "(no rows)", flush=True)
