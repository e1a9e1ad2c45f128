"""Function-layer tests of transforms.sketches: latency DDSketch bins and the distinct-user HLL."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from transforms import sketches
from transforms.elements import LatencyBin

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def _distribution(name: str, n: int = 20_000) -> list[float]:
    rng = random.Random(name)
    if name == "lognormal":
        return [rng.lognormvariate(5.0, 1.2) for _ in range(n)]
    if name == "uniform":
        return [rng.uniform(1.0, 5_000.0) for _ in range(n)]
    if name == "exponential":
        return [rng.expovariate(1 / 300.0) for _ in range(n)]
    if name == "pareto":  # heavy tail: a few requests take minutes
        return [10.0 * rng.paretovariate(1.1) for _ in range(n)]
    if name == "bimodal":  # cache hits and model calls
        return [
            rng.gauss(3.0, 0.5) if rng.random() < 0.3 else rng.gauss(900.0, 150.0) for _ in range(n)
        ]
    if name == "integer_ms_with_zeros":
        return [float(rng.choice((0, 0, 1, 2, 5, 17, 250, 251, 30_000))) for _ in range(n)]
    raise ValueError(name)


DISTRIBUTIONS = (
    "lognormal",
    "uniform",
    "exponential",
    "pareto",
    "bimodal",
    "integer_ms_with_zeros",
)


def _counts(values: list[float]) -> sketches.LatencyCounts:
    counts = sketches.new_latency_counts()
    for value in values:
        sketches.add_latency(counts, value)
    return counts


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_quantiles_within_one_percent_of_exact(name):
    values = [abs(v) for v in _distribution(name)]
    estimates = sketches.latency_quantiles(_counts(values), QUANTILES)
    for q, estimate in zip(QUANTILES, estimates, strict=True):
        # DDSketch's guarantee is against the value at rank q*(n-1), i.e. numpy's "lower".
        exact = float(np.quantile(values, q, method="lower"))
        if exact == 0.0:
            assert estimate == 0.0, (name, q)
        else:
            assert abs(estimate - exact) <= 0.01 * exact, (name, q, estimate, exact)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_quantiles_equal_those_of_a_ddsketch_fed_the_same_values(name):
    values = [abs(v) for v in _distribution(name)]
    reference = DDSketch(0.01)
    for value in values:
        reference.add(value)
    counts = _counts(values)
    assert sketches.latency_quantiles(counts, QUANTILES) == tuple(
        float(reference.get_quantile_value(q)) for q in QUANTILES
    )
    converted = sketches.to_ddsketch(counts)
    assert converted.count == len(values)
    assert [converted.get_quantile_value(q) for q in QUANTILES] == [
        reference.get_quantile_value(q) for q in QUANTILES
    ]


def test_index_is_the_ddsketch_mapping_key_and_honours_the_schema_bounds():
    mapping = LogarithmicMapping(0.01)
    gamma = (1 + 0.01) / (1 - 0.01)
    rng = random.Random(7)
    values = [math.exp(rng.uniform(-12.0, 16.0)) for _ in range(50_000)]
    # Values right at bucket boundaries, where rounding would show first.
    for i in range(-1000, 2000, 7):
        boundary = gamma**i
        values += [boundary, math.nextafter(boundary, 0.0), math.nextafter(boundary, math.inf)]
    for value in values:
        index = sketches.latency_index(value)
        assert index == mapping.key(value), value
        # metric_row.avsc: bucket i holds values in (gamma^(i-1), gamma^i]; allow float slack.
        assert gamma ** (index - 1) * (1 - 1e-12) < value <= gamma**index * (1 + 1e-12), value


def test_merge_equals_the_sketch_of_the_union():
    values = _distribution("lognormal")
    left, right = _counts(values[:7_000]), _counts(values[7_000:])
    right_before = dict(right)
    merged = sketches.merge_latency_counts(left, right)
    assert merged is left
    assert merged == _counts(values)
    assert right == right_before
    assert sketches.latency_quantiles(merged, QUANTILES) == sketches.latency_quantiles(
        _counts(values), QUANTILES
    )


def test_bins_round_trip_sorted_by_index():
    counts = _counts(_distribution("integer_ms_with_zeros") + _distribution("pareto"))
    bins = sketches.to_latency_bins(counts)
    assert all(isinstance(b, LatencyBin) for b in bins)
    assert [b.index for b in bins] == sorted(counts)
    assert sum(b.count for b in bins) == 40_000
    assert sketches.from_latency_bins(bins) == counts
    assert sketches.latency_quantiles(
        sketches.from_latency_bins(bins), QUANTILES
    ) == sketches.latency_quantiles(counts, QUANTILES)


def test_from_bins_sums_repeated_indices_like_a_rollup():
    # Bins of two rows of the same rollup, concatenated.
    rows = [LatencyBin(277, 2), LatencyBin(-5, 1), LatencyBin(277, 3), LatencyBin(300, 1)]
    assert sketches.from_latency_bins(rows) == {-5: 1, 277: 5, 300: 1}
    with pytest.raises(ValueError):
        sketches.from_latency_bins([LatencyBin(1, -1)])


def test_zero_latency_goes_to_the_minimum_int_index():
    counts = _counts([0.0, 0.0, 0.0, 120.0])
    assert sketches.ZERO_INDEX == -(2**31)
    assert sketches.to_latency_bins(counts) == (
        LatencyBin(-2147483648, 3),
        LatencyBin(sketches.latency_index(120.0), 1),
    )
    assert sketches.latency_quantiles(counts, (0.0, 0.5, 0.66)) == (0.0, 0.0, 0.0)
    assert abs(sketches.latency_quantile(counts, 1.0) - 120.0) <= 1.2
    assert sketches.latency_quantile(_counts([0.0]), 0.99) == 0.0


def test_single_value_is_estimated_within_one_percent():
    for value in (0.001, 1.0, 250.0, 86_400_000.0):
        estimate = sketches.latency_quantile(_counts([value]), 0.5)
        assert abs(estimate - value) <= 0.01 * value, value


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_invalid_latency_is_rejected(bad):
    with pytest.raises(ValueError):
        sketches.add_latency({}, bad)


def test_empty_sketch_and_invalid_quantiles():
    assert all(math.isnan(v) for v in sketches.latency_quantiles({}, (0.5, 0.99)))
    assert sketches.to_latency_bins({}) == ()
    with pytest.raises(ValueError):
        sketches.latency_quantile({1: 1}, 1.5)


# --- HLL ------------------------------------------------------------------------------------


def _users(keys) -> object:
    sketch = sketches.new_users()
    for key in keys:
        sketches.add_user(sketch, key)
    return sketch


def test_small_user_counts_are_exact_and_duplicates_count_once():
    sketch = _users(["alice", "bob", "alice", "carol", "bob"])
    assert sketches.users_estimate(sketch) == 3
    assert sketches.users_estimate(sketches.new_users()) == 0
    assert sketch.lg_config_k == 12


@pytest.mark.parametrize("n", [100, 1_000, 10_000, 200_000])
def test_user_estimate_within_three_standard_errors(n):
    sketch = _users(f"user-{i}" for i in range(n))
    # lg_k=12: relative standard error about 1.04/sqrt(4096) = 1.6%.
    assert abs(sketches.users_estimate(sketch) - n) <= 3 * 0.0163 * n


def test_merge_users_estimates_the_union_and_leaves_inputs_alone():
    a = _users(f"user-{i}" for i in range(0, 60_000))
    b = _users(f"user-{i}" for i in range(40_000, 100_000))
    a_before, b_before = a.get_estimate(), b.get_estimate()
    merged = sketches.merge_users([a, b])
    assert abs(sketches.users_estimate(merged) - 100_000) <= 3 * 0.0163 * 100_000
    assert (a.get_estimate(), b.get_estimate()) == (a_before, b_before)
    assert merged.lg_config_k == 12
    small = sketches.merge_users([_users(["x", "y"]), _users(["y", "z"])])
    assert sketches.users_estimate(small) == 3


def test_users_serialize_round_trip():
    for n in (0, 5, 50_000):
        sketch = _users(f"user-{i}" for i in range(n))
        data = sketches.serialize_users(sketch)
        assert isinstance(data, bytes)
        restored = sketches.deserialize_users(data)
        assert restored.get_estimate() == sketch.get_estimate()
        assert restored.lg_config_k == 12
        assert sketches.serialize_users(restored) == data
    # HLL_4 compact: about 2 kB at lg_k=12 once dense.
    assert len(sketches.serialize_users(_users(f"u{i}" for i in range(50_000)))) < 2_200


def test_users_content_is_the_same_for_the_same_users_however_merged():
    for n in (1, 40, 300, 5000):  # a list, a set, then registers
        keys = [f"user-{i}" for i in range(n)]
        contents = set()
        for seed in range(4):
            random.Random(seed).shuffle(keys)
            parts = []
            for p in range(seed + 1):
                sketch = sketches.new_users()
                for key in keys[p :: seed + 1]:
                    sketches.add_user(sketch, key)
                parts.append(sketch)
            merged = sketches.merge_users(parts) if len(parts) > 1 else parts[0]
            contents.add(sketches.users_content(sketches.serialize_users(merged)))
        assert len(contents) == 1, n
        other = sketches.new_users()  # other users (one fewer may leave every register as is)
        for key in [*keys[: max(n // 2, 1)], "someone-else"]:
            sketches.add_user(other, key)
        assert sketches.users_content(sketches.serialize_users(other)) not in contents
