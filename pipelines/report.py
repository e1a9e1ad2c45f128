"""A report people open: one self-contained HTML file of plots from the warehouse.

    python -m pipelines.report --output_root ./out                  # the embedded warehouse
    python -m pipelines.report --bigquery_dataset PROJECT.DATASET \\
        --output report.html                                        # the Google Cloud tables

It reads the last ``--hours`` (24) of data, ending at the newest metric window (not at the wall
clock, so a report of a backfill of last month works), and plots: latency p50/p95/p99 per model
over time, requests and tokens per model, estimated cost per model and the top users by cost,
policy-flag rates over time, dead letters by reason, and the freshness distribution against the
2-minute SLO. When the data of the range spans up to 6 hours it plots per metric window
(``metrics_minute``), beyond that per hour (the rollups of ``metrics_rollup``), so minute rows
that expired do not matter.

The plots are plotly figures with plotly.js embedded once in the file: nothing is fetched when
it is opened, so it works offline and can be mailed or attached to a ticket. It holds aggregates
and pseudonymous user keys only (no user id, no text). Read-only: it never writes to the
warehouse. Percentiles across regions are recomputed from the merged latency sketches, never
averaged.

Length (over 600 lines): one self-contained command (collection, figures, HTML) whose parts
only make sense together; each figure is a small function.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import os
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

import plotly.graph_objects as go
import plotly.offline
import sqlglot
from plotly.subplots import make_subplots
from sqlglot import exp

from pipelines.io.sinks.embedded import AUDIT_DB, WAREHOUSE_DB
from pipelines.io.sinks.metrics_commit import FRESHNESS_SLO_S
from pipelines.launch import fail
from transforms import sketches

__all__ = ["ReportData", "collect", "main", "render", "run", "write_report"]

DEFAULT_HOURS = 24
MINUTE_GRAIN_MAX_HOURS = 6  # beyond this, plot the hourly rollups
TOP_USERS = 10
SLO_TARGET = 0.99
_QUANTILES = (0.5, 0.95, 0.99)
_DATASET_MARKER = "__dataset__"


# --- where the data comes from -------------------------------------------------------------


class _Embedded:
    """The embedded warehouse (DuckDB, read-only) and audit log (SQLite) under a root."""

    def __init__(self, output_root: str):
        import duckdb

        self.describe = os.path.join(output_root, WAREHOUSE_DB)
        self._audit = os.path.join(output_root, AUDIT_DB)
        self._con = duckdb.connect(self.describe, read_only=True)
        self._con.execute("SET TimeZone = 'UTC'")

    def rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        (statement,) = sqlglot.parse(sql.replace("{dataset}", _DATASET_MARKER), read="bigquery")
        for table in statement.find_all(exp.Table):
            if table.db == _DATASET_MARKER:
                table.set("db", None)
        cursor = self._con.execute(statement.sql(dialect="duckdb"), params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def dead_letters(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, int]]:
        if not os.path.exists(self._audit):
            return []
        # Audit times are ISO-8601 text ending in Z (pipelines.io.sinks.embedded.audit).
        with sqlite3.connect(f"file:{self._audit}?mode=ro", uri=True) as con:
            return con.execute(
                "SELECT reason, count(*) FROM audit_log WHERE outcome = 'dead_lettered' "
                "AND coalesce(event_time, recorded_at) BETWEEN ? AND ? "
                "GROUP BY reason ORDER BY 2 DESC, 1",
                [_iso(start), _iso(end)],
            ).fetchall()

    def close(self) -> None:
        self._con.close()


class _BigQuery:
    """The Google Cloud tables and views of a dataset (``PROJECT.DATASET``)."""

    def __init__(self, dataset: str):
        from pipelines.io.sinks.gcp.bigquery import bigquery_client, split_dataset

        self.describe = f"BigQuery {dataset}"
        self._dataset = dataset
        self._client = bigquery_client(split_dataset(dataset)[0])

    def rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(name, "TIMESTAMP", value)
                for name, value in params.items()
            ]
        )
        job = self._client.query(sql.replace("{dataset}", self._dataset), job_config=config)
        return [dict(row.items()) for row in job.result()]

    def dead_letters(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, int]]:
        rows = self.rows(
            "SELECT reason, count(*) AS n FROM `{dataset}.audit_log_unique` "
            "WHERE outcome = 'dead_lettered' "
            "AND COALESCE(event_time, recorded_at) BETWEEN @start AND @end "
            "GROUP BY reason ORDER BY n DESC, reason",
            {"start": start, "end": end},
        )
        return [(r["reason"], r["n"]) for r in rows]

    def close(self) -> None:
        pass


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the data of the report (plain functions) ----------------------------------------------


class ReportData(NamedTuple):
    """What the plots show, already aggregated (lists of plain values, no database objects)."""

    source: str
    start: dt.datetime
    end: dt.datetime
    grain: str  # "window" (metric windows) or "hour" (hourly rollups)
    # per model: (time, requests, tokens, cost, p50, p95, p99) sorted by time
    series: dict[str, list[tuple]]
    # per policy flag: (time, flagged requests / requests) sorted by time
    flag_rates: dict[str, list[tuple[dt.datetime, float]]]
    cost_by_model: dict[str, float]
    top_users: list[tuple[str, float, int, int]]  # (user_key, cost, tokens, requests)
    dead_letters: list[tuple[str, int]]  # (reason, inputs)
    freshness: list[tuple[int, int]]  # (latency_s bucket, events)

    @property
    def empty(self) -> bool:
        return not self.series


def metric_series(rows: Iterable[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """From metric rows (minute rows or hourly rollups: ``t``, ``model``, ``request_count``,
    ``token_sum``, ``estimated_cost_usd``, ``latency_sketch_bins``, ``policy_flag_counts``):
    the per-model series (sketches merged over regions), the policy-flag rates over all models
    and the cost per model."""
    by_model: dict[tuple, list] = {}
    by_time: dict[dt.datetime, list] = {}
    cost_by_model: dict[str, float] = defaultdict(float)
    for row in rows:
        entry = by_model.setdefault((row["model"], row["t"]), [0, 0, 0.0, {}])
        entry[0] += row["request_count"]
        entry[1] += row["token_sum"]
        entry[2] += row["estimated_cost_usd"] or 0.0
        bins = sketches.from_latency_bins(
            (b["index"], b["count"]) for b in row["latency_sketch_bins"] or ()
        )
        sketches.merge_latency_counts(entry[3], bins)
        cost_by_model[row["model"]] += row["estimated_cost_usd"] or 0.0
        totals = by_time.setdefault(row["t"], [0, defaultdict(int)])
        totals[0] += row["request_count"]
        for flag in row["policy_flag_counts"] or ():
            totals[1][flag["key"]] += flag["value"]
    series: dict[str, list[tuple]] = defaultdict(list)
    for (model, moment), (requests, tokens, cost, bins) in sorted(by_model.items()):
        p50, p95, p99 = sketches.latency_quantiles(bins, _QUANTILES)
        series[model].append((moment, requests, tokens, cost, p50, p95, p99))
    flags = sorted({f for _, counts in by_time.values() for f in counts})
    rates = {
        flag: [
            (moment, counts.get(flag, 0) / requests)
            for moment, (requests, counts) in sorted(by_time.items())
            if requests
        ]
        for flag in flags
    }
    return dict(series), rates, dict(cost_by_model)


def freshness_summary(
    freshness: list[tuple[int, int]],
) -> tuple[int, float | None, int | None, int | None]:
    """(events, share within the SLO, p50, p99) of a freshness histogram (nearest rank, the
    buckets' lower bounds: the definition of the views and the run summary)."""
    total = sum(n for _, n in freshness)
    if not total:
        return 0, None, None, None
    within = sum(n for s, n in freshness if s < FRESHNESS_SLO_S)
    quantiles = []
    for q in (0.5, 0.99):
        rank, seen = max(1, -(-q * total // 1)), 0
        for latency_s, n in sorted(freshness):
            seen += n
            if seen >= rank:
                quantiles.append(latency_s)
                break
    return total, within / total, quantiles[0], quantiles[1]


_METRIC_COLUMNS = (
    "model, request_count, token_sum, estimated_cost_usd, latency_sketch_bins, policy_flag_counts"
)


def collect(source, hours: int = DEFAULT_HOURS) -> ReportData:
    """Reads what the report shows from ``source`` (``_Embedded`` or ``_BigQuery``)."""
    (newest,) = source.rows(
        "SELECT MAX(window_start) AS newest FROM `{dataset}.metrics_minute`", {}
    )
    end = newest["newest"]
    if end is None:
        (newest,) = source.rows(
            "SELECT MAX(period_end) AS newest FROM `{dataset}.metrics_rollup` WHERE grain = 'hour'",
            {},
        )
        end = newest["newest"]
    if end is None:
        now = dt.datetime.now(dt.UTC)
        return ReportData(source.describe, now, now, "window", {}, {}, {}, [], [], [])
    end = end.astimezone(dt.UTC)
    start = end - dt.timedelta(hours=hours)
    params = {"start": start, "end": end}
    (earliest,) = source.rows(
        "SELECT MIN(window_start) AS earliest FROM `{dataset}.metrics_minute` "
        "WHERE window_start BETWEEN @start AND @end",
        params,
    )
    earliest = earliest["earliest"]
    span = end - earliest if earliest is not None else dt.timedelta(hours=hours)
    if span <= dt.timedelta(hours=MINUTE_GRAIN_MAX_HOURS):
        grain = "window"
        rows = source.rows(
            f"SELECT window_start AS t, {_METRIC_COLUMNS} FROM `{{dataset}}.metrics_minute` "
            "WHERE window_start BETWEEN @start AND @end",
            params,
        )
    else:
        grain = "hour"
        rows = source.rows(
            f"SELECT period_start AS t, {_METRIC_COLUMNS} FROM `{{dataset}}.metrics_rollup` "
            "WHERE grain = 'hour' AND period_start BETWEEN @start AND @end",
            params,
        )
    for row in rows:
        row["t"] = row["t"].astimezone(dt.UTC)
    series, rates, cost_by_model = metric_series(rows)
    hour_start = start.replace(minute=0, second=0, microsecond=0)
    users = source.rows(
        "SELECT user_key, SUM(estimated_cost_usd) AS cost, SUM(token_sum) AS tokens, "
        "SUM(request_count) AS requests FROM `{dataset}.usage_hourly` "
        "WHERE hour_start BETWEEN @hour_start AND @end GROUP BY user_key "
        f"ORDER BY cost DESC, tokens DESC, user_key LIMIT {TOP_USERS}",
        {"hour_start": hour_start, "end": end},
    )
    freshness = source.rows(
        "SELECT latency_s, SUM(events) AS events FROM `{dataset}.freshness_minute` "
        "WHERE window_start BETWEEN @start AND @end GROUP BY latency_s ORDER BY latency_s",
        params,
    )
    return ReportData(
        source=source.describe,
        start=start,
        end=end,
        grain=grain,
        series=series,
        flag_rates=rates,
        cost_by_model=cost_by_model,
        top_users=[
            (u["user_key"], u["cost"] or 0.0, int(u["tokens"]), int(u["requests"])) for u in users
        ],
        # Processing lags event time: the dead letters of the range's last windows are recorded
        # after it ends (a dead letter without an event time is dated when it was recorded).
        dead_letters=[
            (r, int(n)) for r, n in source.dead_letters(start, end + dt.timedelta(hours=1))
        ],
        freshness=[(int(f["latency_s"]), int(f["events"])) for f in freshness],
    )


# --- the HTML -------------------------------------------------------------------------------

_LAYOUT = {
    "template": "plotly_white",
    "height": 420,
    "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
    "legend": {"orientation": "h", "y": -0.18},
    "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
}


def _latency_figure(data: ReportData) -> go.Figure:
    figure = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=("p50", "p95", "p99"))
    for i, model in enumerate(sorted(data.series)):
        points = data.series[model]
        times = [p[0] for p in points]
        for column, position in ((4, 1), (5, 2), (6, 3)):
            figure.add_trace(
                go.Scatter(
                    x=times,
                    y=[p[column] for p in points],
                    mode="lines+markers",
                    name=model,
                    legendgroup=model,
                    showlegend=position == 1,
                    line={"color": _color(i)},
                    hovertemplate="%{x}<br>%{y:.0f} ms<extra>" + html.escape(model) + "</extra>",
                ),
                row=1,
                col=position,
            )
    # Every shared axis log-scaled alike (plotly refuses to match axes of different types).
    figure.update_yaxes(type="log")
    figure.update_yaxes(title_text="latency (ms)", row=1, col=1)
    figure.update_layout(title="Latency percentiles per model (log scale)", **_LAYOUT)
    return figure


def _usage_figure(data: ReportData) -> go.Figure:
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("Requests", "Tokens"), horizontal_spacing=0.08
    )
    for i, model in enumerate(sorted(data.series)):
        points = data.series[model]
        times = [p[0] for p in points]
        for column, position in ((1, 1), (2, 2)):
            figure.add_trace(
                go.Scatter(
                    x=times,
                    y=[p[column] for p in points],
                    mode="lines",
                    stackgroup=f"s{position}",
                    name=model,
                    legendgroup=model,
                    showlegend=position == 1,
                    line={"color": _color(i)},
                ),
                row=1,
                col=position,
            )
    figure.update_layout(title="Utilization: requests and tokens per model", **_LAYOUT)
    return figure


def _cost_figure(data: ReportData) -> go.Figure:
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Estimated cost per model (USD)", f"Top {TOP_USERS} users by cost (USD)"),
        horizontal_spacing=0.22,
    )
    models = sorted(data.cost_by_model, key=data.cost_by_model.get, reverse=True)
    figure.add_trace(
        go.Bar(
            x=models,
            y=[data.cost_by_model[m] for m in models],
            marker_color=[_color(sorted(data.series).index(m)) for m in models],
            name="cost per model",
            showlegend=False,
            hovertemplate="%{x}<br>%{y:$.4f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    users = list(reversed(data.top_users))
    figure.add_trace(
        go.Bar(
            x=[u[1] for u in users],
            y=[u[0][:12] + "…" for u in users],
            orientation="h",
            name="top users",
            showlegend=False,
            marker_color="#6c5ce7",
            customdata=[[u[0], u[2], u[3]] for u in users],
            hovertemplate="%{customdata[0]}<br>%{x:$.4f}, %{customdata[1]} tokens, "
            "%{customdata[2]} requests<extra></extra>",
        ),
        row=1,
        col=2,
    )
    figure.update_layout(
        title="Cost: per model and top users (pseudonymous keys)",
        **{**_LAYOUT, "margin": {**_LAYOUT["margin"], "t": 90}},
    )
    return figure


def _flags_figure(data: ReportData) -> go.Figure:
    figure = go.Figure()
    for i, flag in enumerate(sorted(data.flag_rates)):
        points = data.flag_rates[flag]
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines+markers",
                name=flag,
                line={"color": _color(i + 3)},
            )
        )
    figure.update_yaxes(title_text="share of requests", tickformat=".1%")
    figure.update_layout(title="Policy-flag rates (all models)", **_LAYOUT)
    return figure


def _dead_letter_figure(data: ReportData) -> go.Figure:
    reasons = list(reversed(data.dead_letters))
    figure = go.Figure(
        go.Bar(
            x=[n for _, n in reasons],
            y=[r for r, _ in reasons],
            orientation="h",
            marker_color="#d63031",
            name="dead letters",
        )
    )
    figure.update_xaxes(title_text="inputs")
    figure.update_layout(title="Dead letters by reason", **{**_LAYOUT, "margin": {"l": 220}})
    return figure


def _freshness_figure(data: ReportData) -> go.Figure:
    total = sum(n for _, n in data.freshness) or 1
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Bar(
            x=[s for s, _ in data.freshness],
            y=[n for _, n in data.freshness],
            name="events",
            marker_color="#0984e3",
            hovertemplate="%{x} s: %{y} events<extra></extra>",
        ),
        secondary_y=False,
    )
    running, cumulative = 0, []
    for _, n in data.freshness:
        running += n
        cumulative.append(running / total)
    figure.add_trace(
        go.Scatter(
            x=[s for s, _ in data.freshness],
            y=cumulative,
            name="share visible (cumulative)",
            mode="lines",
            line={"color": "#2d3436"},
        ),
        secondary_y=True,
    )
    figure.add_vline(
        x=FRESHNESS_SLO_S,
        line={"color": "#d63031", "dash": "dash"},
        annotation_text=f"SLO: {FRESHNESS_SLO_S} s",
    )
    figure.add_hline(y=SLO_TARGET, line={"color": "#d63031", "dash": "dot"}, secondary_y=True)
    _, share, _, _ = freshness_summary(data.freshness)
    figure.update_xaxes(title_text="freshness: ingestion to visible in the warehouse (s)")
    figure.update_yaxes(title_text="events", secondary_y=False)
    figure.update_yaxes(
        title_text="share of events",
        tickformat=".0%",
        range=[0, 1.02],
        dtick=0.2,
        secondary_y=True,
    )
    figure.update_layout(
        title=f"Freshness: {share:.2%} visible within {FRESHNESS_SLO_S} s "
        f"(SLO target {SLO_TARGET:.0%})",
        **_LAYOUT,
    )
    return figure


_PALETTE = ("#0984e3", "#00b894", "#e17055", "#6c5ce7", "#fdcb6e", "#d63031", "#00cec9", "#636e72")


def _color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _kpis(data: ReportData) -> list[tuple[str, str]]:
    requests = sum(p[1] for points in data.series.values() for p in points)
    tokens = sum(p[2] for points in data.series.values() for p in points)
    cost = sum(data.cost_by_model.values())
    _, share, p50, p99 = freshness_summary(data.freshness)
    slo = "n/a" if share is None else f"{share:.2%}"
    verdict = "" if share is None else (" met" if share >= SLO_TARGET else " MISSED")
    return [
        ("requests", f"{requests:,}"),
        ("tokens", f"{tokens:,}"),
        ("estimated cost", f"${cost:,.2f}"),
        ("dead letters", f"{sum(n for _, n in data.dead_letters):,}"),
        (f"visible within {FRESHNESS_SLO_S} s", f"{slo}{verdict}"),
        ("freshness p50 / p99", "n/a" if p50 is None else f"{p50} s / {p99} s"),
    ]


_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0;
       background: #f5f6fa; color: #2d3436; }
header { background: #2d3436; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; color: #dfe6e9; font-size: 13px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; padding: 18px 28px 0 28px; }
.kpi { background: #fff; border-radius: 8px; padding: 12px 18px; min-width: 150px;
       box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.kpi .label { font-size: 12px; color: #636e72; }
.kpi .value { font-size: 20px; font-weight: 600; margin-top: 2px; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(640px, 1fr));
       gap: 16px; padding: 18px 28px 28px 28px; }
.chart { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.08);
         padding: 6px; }
.chart.wide { grid-column: 1 / -1; }
.note { padding: 24px; color: #636e72; }
footer { padding: 0 28px 24px 28px; font-size: 12px; color: #636e72; }
"""


def render(data: ReportData, generated_at: dt.datetime | None = None) -> str:
    """The report as one HTML document, plotly.js embedded."""
    generated_at = generated_at or dt.datetime.now(dt.UTC)
    grain = "metric window" if data.grain == "window" else "hour (rollups)"
    header = (
        f"<h1>GenAI gateway: usage, latency, policy and freshness</h1>"
        f"<p>{html.escape(data.source)} &middot; {data.start:%Y-%m-%d %H:%M} to "
        f"{data.end:%Y-%m-%d %H:%M} UTC &middot; per {grain}</p>"
    )
    kpis = "".join(
        f'<div class="kpi"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
        for label, value in _kpis(data)
    )
    if data.empty:
        charts = '<div class="note">The warehouse holds no metrics yet.</div>'
    else:
        wide = {"latency", "usage"}
        figures = [
            ("latency", _latency_figure(data)),
            ("usage", _usage_figure(data)),
            ("cost", _cost_figure(data)),
            ("policy-flags", _flags_figure(data)),
            ("dead-letters", _dead_letter_figure(data)),
            ("freshness", _freshness_figure(data)),
        ]
        charts = "".join(
            f'<div class="chart{" wide" if name in wide else ""}">{_chart(name, figure)}</div>'
            for name, figure in figures
            if _has_data(figure)
        )
        skipped = [name for name, figure in figures if not _has_data(figure)]
        if skipped:
            charts += (
                f'<div class="note">No data in this range for: {html.escape(", ".join(skipped))}'
                ".</div>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>GenAI gateway report</title>"
        f"<style>{_STYLE}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f'<header>{header}</header><section class="kpis">{kpis}</section>'
        f"<main>{charts}</main>"
        f"<footer>Generated {generated_at:%Y-%m-%d %H:%M:%S} UTC by python -m pipelines.report. "
        "Latency percentiles from merged DDSketch bins (relative error &le; 1%); cost is an "
        "estimate from the price table, not an invoice; users are keyed pseudonyms.</footer>"
        "</body></html>\n"
    )


def _has_data(figure: go.Figure) -> bool:
    return any(len(trace.x or ()) for trace in figure.data)


def _chart(name: str, figure: go.Figure) -> str:
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{name}",
        config={"displaylogo": False, "responsive": True},
    )


def write_report(source, path: str, hours: int = DEFAULT_HOURS) -> ReportData:
    """Collects, renders and writes the report to ``path``; returns what it shows."""
    data = collect(source, hours)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(render(data))
    os.replace(temporary, path)  # readers never see half a file
    return data


# --- command ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--output_root",
        default="./out",
        help="Root of the embedded outputs (warehouse.duckdb, audit.sqlite) to report on.",
    )
    parser.add_argument(
        "--bigquery_dataset",
        default="",
        help="Report on the Google Cloud tables of PROJECT.DATASET instead.",
    )
    parser.add_argument(
        "--output",
        default="",
        help="The HTML file to write (default: <output_root>/report.html).",
    )
    parser.add_argument(
        "--hours",
        type=int,
        default=DEFAULT_HOURS,
        help="Hours of data to show, ending at the newest metric window (default 24; up to "
        f"{MINUTE_GRAIN_MAX_HOURS} per metric window, beyond per hour).",
    )
    return parser


def validate(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.hours < 1:
        problems.append("--hours must be >= 1")
    if args.bigquery_dataset:
        from pipelines.io.sinks.gcp.bigquery import split_dataset

        try:
            split_dataset(args.bigquery_dataset)
        except ValueError:
            problems.append("--bigquery_dataset must be PROJECT.DATASET")
    elif not os.path.exists(os.path.join(args.output_root, WAREHOUSE_DB)):
        problems.append(
            f"no warehouse at {os.path.join(args.output_root, WAREHOUSE_DB)}: run a pipeline "
            "first (make run), or give --output_root or --bigquery_dataset"
        )
    return problems


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = validate(args)
    if problems:
        fail(problems)
    path = args.output or os.path.join(args.output_root, "report.html")
    source = (
        _BigQuery(args.bigquery_dataset) if args.bigquery_dataset else _Embedded(args.output_root)
    )
    try:
        data = write_report(source, path, args.hours)
    finally:
        source.close()
    _, share, _, _ = freshness_summary(data.freshness)
    slo = "n/a" if share is None else f"{share:.2%} within {FRESHNESS_SLO_S} s"
    print(f"report written: {path}  (freshness SLO: {slo})", flush=True)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
