"""Run totals: the accumulator that sums outcomes and keeps each metric pane's largest count."""

from collections import Counter

from pipelines.local.tally import _SumCountsFn


def _accumulator(totals: dict[str, int], panes: dict[tuple, int]):
    return Counter(totals), dict(panes)


def test_merging_sums_totals_and_keeps_each_panes_largest_count():
    fn = _SumCountsFn()
    first = _accumulator({"read": 3, "outcome.written": 2}, {("w1", "m", "eu"): 5})
    second = _accumulator({"read": 4, "outcome.duplicate": 1}, {("w1", "m", "eu"): 7, "w2": 1})
    third = _accumulator({"read": 1}, {("w1", "m", "eu"): 6})

    out = fn.extract_output(fn.merge_accumulators([first, second, third]))

    assert out["read"] == 8
    assert out["outcome.written"] == 2
    assert out["outcome.duplicate"] == 1
    assert out["metrics.requests_counted"] == 7 + 1
    assert out["metrics.windows"] == 2


def test_merging_leaves_every_accumulator_but_the_first_unchanged():
    fn = _SumCountsFn()
    later = _accumulator({"read": 4}, {"w": 9})
    merged = fn.merge_accumulators([_accumulator({"read": 1}, {"w": 2}), later])

    assert later == _accumulator({"read": 4}, {"w": 9})
    assert merged == _accumulator({"read": 5}, {"w": 9})


def test_merging_nothing_gives_an_empty_accumulator():
    fn = _SumCountsFn()
    assert fn.extract_output(fn.merge_accumulators([])) == {
        "metrics.requests_counted": 0,
        "metrics.windows": 0,
    }


def test_the_summary_reads_the_freshness_of_the_run(tmp_path, capsys):
    """The run totals count each commit's (latency_s, events); the summary gives nearest-rank
    p50/p99 and the share visible within the 120 s SLO."""
    import datetime as dt
    import json
    import os

    from pipelines.local import summary, tally

    totals = {"read": 100, "outcome.written": 100, "metrics.requests_counted": 100}
    for name, n in tally._freshness_keys((10, 50)) + tally._freshness_keys((119, 40)):
        totals[name] = n
    totals.update(dict(tally._freshness_keys((120, 9))))
    totals.update(dict(tally._freshness_keys((700, 1))))
    os.makedirs(tmp_path / "runs")
    (tmp_path / "runs" / "r1.json").write_text(json.dumps(totals))
    s = summary.summarize(str(tmp_path), "r1", dt.datetime.now(dt.UTC))
    assert (s.freshness_events, s.freshness_within_slo) == (100, 90)
    assert (s.freshness_p50_s, s.freshness_p99_s) == (10.0, 120.0)
    summary.print_summary(s)
    printed = capsys.readouterr().out
    assert (
        "freshness p50/p99  10.0 s / 120.0 s   (ingestion -> committed in the warehouse" in printed
    )
    assert "90.00% of events visible within 120 s (target 99%: MISSED)" in printed
