"""The report's plain functions: series merged over regions (percentiles from the merged
sketches, never averaged), flag rates over all models, the freshness summary's nearest ranks,
and an HTML document with plotly.js embedded once and a chart per question."""

from __future__ import annotations

import datetime as dt

from pipelines import report
from tests.support.sink_factories import T0, metric_row
from transforms import sketches


def _row(moment, model, region, latencies, flags=None, cost=0.25):
    row = metric_row(latencies_ms=latencies, model=model, region=region)
    return {
        "t": moment,
        "model": model,
        "request_count": row.request_count,
        "token_sum": row.token_sum,
        "estimated_cost_usd": cost,
        "latency_sketch_bins": [
            {"index": b.index, "count": b.count} for b in row.latency_sketch_bins
        ],
        "policy_flag_counts": [{"key": k, "value": v} for k, v in (flags or {}).items()],
    }


def test_metric_series_merge_regions_and_rate_flags_over_models():
    later = T0 + dt.timedelta(minutes=1)
    rows = [
        _row(T0, "a", "eu", (10.0, 20.0), {"pii_redacted": 1}),
        _row(T0, "a", "us", (1000.0,)),
        _row(T0, "b", "eu", (5.0,), {"pii_redacted": 1, "jailbreak_suspected": 1}, cost=None),
        _row(later, "a", "eu", (30.0,)),
    ]
    series, rates, cost = report.metric_series(rows)
    merged = sketches.new_latency_counts()
    for latency in (10.0, 20.0, 1000.0):
        sketches.add_latency(merged, latency)
    p50, p95, p99 = sketches.latency_quantiles(merged, (0.5, 0.95, 0.99))
    assert series["a"][0] == (T0, 3, 900, 0.5, p50, p95, p99)  # both regions, one point
    assert [p[0] for p in series["a"]] == [T0, later]
    assert rates == {
        "jailbreak_suspected": [(T0, 1 / 4), (later, 0.0)],
        "pii_redacted": [(T0, 2 / 4), (later, 0.0)],
    }
    assert cost == {"a": 0.75, "b": 0.0}


def test_freshness_summary_uses_nearest_rank_over_the_buckets():
    assert report.freshness_summary([]) == (0, None, None, None)
    events, share, p50, p99 = report.freshness_summary([(10, 50), (119, 40), (120, 5), (700, 5)])
    assert (events, share, p50, p99) == (100, 0.9, 10, 700)


def _data() -> report.ReportData:
    rows = [
        _row(T0, "a", "eu", (10.0, 20.0), {"pii_redacted": 1}),
        _row(T0 + dt.timedelta(minutes=1), "a", "eu", (30.0,)),
    ]
    series, rates, cost = report.metric_series(rows)
    return report.ReportData(
        source="test <warehouse>",
        start=T0,
        end=T0 + dt.timedelta(minutes=1),
        grain="window",
        series=series,
        flag_rates=rates,
        cost_by_model=cost,
        top_users=[("k" * 64, 0.5, 900, 3)],
        dead_letters=[("invalid_json", 2)],
        freshness=[(10, 2), (130, 1)],
    )


def test_render_embeds_plotly_once_and_draws_every_chart():
    html = report.render(_data(), generated_at=T0)
    assert html.count("/**\n* plotly.js v") == 1
    for chart in ("latency", "usage", "cost", "policy-flags", "dead-letters", "freshness"):
        assert f'id="chart-{chart}"' in html
    assert "test &lt;warehouse&gt;" in html  # escaped
    assert "66.67% visible within 120 s" in html
    assert "No data in this range" not in html


def test_render_says_which_charts_have_no_data():
    data = _data()._replace(dead_letters=[], top_users=[])
    html = report.render(data, generated_at=T0)
    assert 'id="chart-dead-letters"' not in html
    assert "No data in this range for: dead-letters." in html
    assert 'id="chart-cost"' in html  # the cost per model still has data
