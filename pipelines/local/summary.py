"""End-of-run summary: the counters of the run and what the warehouse holds from it."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import NamedTuple

from pipelines.io.sinks.embedded import AUDIT_DB, WAREHOUSE_DB
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
    freshness_p50_s: float | None  # streaming EARLY panes: emission - newest event time
    freshness_p99_s: float | None
    freshness_panes: int
    on_time_panes: int
    on_time_freshness_p99_s: float | None
    late_panes: int
    late_freshness_p99_s: float | None
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


def _freshness(counters: dict[str, int], timing: str) -> tuple[list[float | None], int]:
    """Freshness p50/p99 (emission minus newest event time, whole seconds) of the streaming
    panes of one timing (``early``, ``on_time``, ``late``), and the number of panes."""
    prefix = f"{FRESHNESS_PREFIX}{timing}."
    histogram = {
        int(name.removeprefix(prefix)): n for name, n in counters.items() if name.startswith(prefix)
    }
    return _quantiles(histogram, (0.5, 0.99)), sum(histogram.values())


def new_run_id(started_at: dt.datetime) -> str:
    return started_at.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def summarize(output_root: str, run_id: str, started_at: dt.datetime) -> Summary:
    """Builds the summary of the finished run ``run_id`` started at ``started_at``."""
    counters = read_tally(output_root, run_id)
    (p50, p99), panes = _freshness(counters, "early")
    (_, on_time_p99), on_time_panes = _freshness(counters, "on_time")
    (_, late_p99), late_panes = _freshness(counters, "late")
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
        freshness_panes=panes,
        on_time_panes=on_time_panes,
        on_time_freshness_p99_s=on_time_p99,
        late_panes=late_panes,
        late_freshness_p99_s=late_p99,
        elapsed_s=(dt.datetime.now(dt.UTC) - started_at).total_seconds(),
        sink_dead_letters={
            name.removeprefix("sink_dead_letter."): n
            for name, n in sorted(counters.items())
            if name.startswith("sink_dead_letter.")
        },
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


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
        lines.append("sink rows dead-lettered (not events: rows a sink could not write):")
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
        f"   (pane emission - newest event it counts, {s.freshness_panes} EARLY streaming panes;"
        f" ON_TIME: {s.on_time_panes} panes, p99 {_fmt(s.on_time_freshness_p99_s)};"
        f" LATE: {s.late_panes} panes, p99 {_fmt(s.late_freshness_p99_s)})",
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
