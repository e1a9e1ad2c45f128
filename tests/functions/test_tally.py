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
