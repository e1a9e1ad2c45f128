"""Mergeable sketches for the usage metrics: a latency DDSketch and a distinct-user HLL.

Plain typed functions, no Beam, so the combiner in ``aggregate.py`` stays a thin adapter and the
maths can be tested on its own.

Latency (DDSketch, relative accuracy 0.01). The sketch is kept as a plain ``dict`` from bucket
index to count (``LatencyCounts``) rather than a ``ddsketch.DDSketch`` object: the bucket index is
the library's own ``LogarithmicMapping`` formula, computed inline, which costs about 0.1 µs per
value against 0.5 µs for ``DDSketch.add``, and a dict of ints pickles and merges cheaply. Bucket
``i`` holds values in ``(gamma^(i-1), gamma^i]``, ``gamma = (1+a)/(1-a)``; latencies of 0 ms (and
anything below the smallest value the mapping can index) go to ``ZERO_INDEX``, as the
``metric_row.avsc`` contract says. Quantiles use DDSketch's rank rule (``rank = q*(count-1)``,
first bucket whose running count exceeds it, value ``2*gamma^i/(gamma+1)``), so the bins give the
same quantiles as a ``DDSketch`` fed the same values (``to_ddsketch`` builds one; tests compare).
Relative error of any quantile is at most 1% against the exact value at that rank.

Distinct users (Apache DataSketches HLL, lg_k=12, HLL_4 registers): about 1.6% standard error,
exact for small counts. ``hll_sketch`` objects are not picklable; use ``serialize_users`` /
``deserialize_users`` to move them (under 1 µs each way, about 2 kB when dense).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import datasketches
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from transforms.elements import LatencyBin

__all__ = [
    "HLL_LG_K",
    "RELATIVE_ACCURACY",
    "ZERO_INDEX",
    "LatencyCounts",
    "add_latency",
    "add_user",
    "bucket_value",
    "deserialize_users",
    "from_latency_bins",
    "latency_index",
    "latency_quantile",
    "latency_quantiles",
    "merge_latency_counts",
    "merge_users",
    "new_latency_counts",
    "new_users",
    "serialize_users",
    "to_ddsketch",
    "to_latency_bins",
    "users_content",
    "users_estimate",
]

RELATIVE_ACCURACY = 0.01
ZERO_INDEX = -2147483648  # Avro int minimum: the bucket of 0 ms latencies (metric_row.avsc).
HLL_LG_K = 12
# HLL_4 serializes to about 2 kB at lg_k=12 (HLL_8: 4 kB) and updates as fast (~0.1 µs).
_HLL_TYPE = datasketches.tgt_hll_type.HLL_4

LatencyCounts = dict[int, int]
"""Latency sketch in accumulator form: bucket index -> number of values in it."""

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# Same expression, in the same order, as LogarithmicMapping.__init__, so that
# ceil(log2(v) * _MULTIPLIER) equals _MAPPING.key(v) bit for bit (a test checks it).
_MULTIPLIER = (1 / math.log1p(2 * RELATIVE_ACCURACY / (1 - RELATIVE_ACCURACY))) * math.log(2)
_MIN_INDEXABLE = _MAPPING.min_possible
_MAX_INDEXABLE = _MAPPING.max_possible
_log2 = math.log2
_ceil = math.ceil


# --- latency (DDSketch) --------------------------------------------------------------------


def new_latency_counts() -> LatencyCounts:
    """Returns an empty latency sketch."""
    return {}


def latency_index(latency_ms: float) -> int:
    """Returns the bucket index of ``latency_ms`` (``ZERO_INDEX`` for 0).

    Raises:
        ValueError: ``latency_ms`` is negative, NaN or infinite (parsing rejects those, so
            reaching here is a bug upstream, not bad data to route).
    """
    if latency_ms > _MIN_INDEXABLE:
        if latency_ms > _MAX_INDEXABLE:
            raise ValueError(f"latency_ms out of range: {latency_ms!r}")
        return _ceil(_log2(latency_ms) * _MULTIPLIER)
    if latency_ms >= 0.0:
        return ZERO_INDEX
    raise ValueError(f"latency_ms must be >= 0, got {latency_ms!r}")


def add_latency(counts: LatencyCounts, latency_ms: float) -> None:
    """Adds one latency to ``counts`` in place (the hot path of the combiner)."""
    if _MIN_INDEXABLE < latency_ms <= _MAX_INDEXABLE:
        index = _ceil(_log2(latency_ms) * _MULTIPLIER)
    else:
        index = latency_index(latency_ms)  # zero, or raises
    counts[index] = counts.get(index, 0) + 1


def merge_latency_counts(into: LatencyCounts, other: LatencyCounts) -> LatencyCounts:
    """Adds ``other`` into ``into`` in place and returns ``into``; ``other`` is not modified."""
    for index, count in other.items():
        into[index] = into.get(index, 0) + count
    return into


def bucket_value(index: int) -> float:
    """The value a bucket stands for (0 for ``ZERO_INDEX``): what quantiles return."""
    return 0.0 if index == ZERO_INDEX else _MAPPING.value(index)


def latency_quantiles(counts: LatencyCounts, quantiles: Sequence[float]) -> tuple[float, ...]:
    """Returns the sketch's estimate of each quantile in ``quantiles`` (each in [0, 1]).

    One pass over the sorted buckets for all quantiles. An empty sketch gives NaN for each.
    """
    for q in quantiles:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    total = sum(counts.values())
    if total == 0:
        return tuple(math.nan for _ in quantiles)
    ranks = sorted((q * (total - 1), position) for position, q in enumerate(quantiles))
    result = [math.nan] * len(quantiles)
    pending = iter(ranks)
    rank, position = next(pending)
    running = 0
    for index in sorted(counts):
        running += counts[index]
        while running > rank:
            result[position] = bucket_value(index)
            try:
                rank, position = next(pending)
            except StopIteration:
                return tuple(result)
    raise AssertionError("unreachable: the last rank is below the total count")


def latency_quantile(counts: LatencyCounts, quantile: float) -> float:
    """Returns the sketch's estimate of one quantile (NaN for an empty sketch)."""
    return latency_quantiles(counts, (quantile,))[0]


def to_latency_bins(counts: LatencyCounts) -> tuple[LatencyBin, ...]:
    """Returns the non-empty buckets as ``LatencyBin`` sorted by index (the Avro form)."""
    return tuple(LatencyBin(index, counts[index]) for index in sorted(counts) if counts[index])


def from_latency_bins(bins: Iterable[LatencyBin]) -> LatencyCounts:
    """Inverse of ``to_latency_bins``; counts of repeated indices are summed (a rollup)."""
    counts: LatencyCounts = {}
    for index, count in bins:
        if count < 0:
            raise ValueError(f"negative count {count!r} at index {index!r}")
        if count:
            counts[index] = counts.get(index, 0) + count
    return counts


def to_ddsketch(counts: LatencyCounts) -> DDSketch:
    """Returns a ``ddsketch.DDSketch`` holding the same buckets (for interop and checks).

    Each bucket is added as its representative value, which maps back to the same index, so
    the quantiles equal ``latency_quantiles``. The sketch's sum, min and max are those of the
    representative values, not of the original latencies (the bins do not carry them).
    """
    sketch = DDSketch(RELATIVE_ACCURACY)
    for index, count in counts.items():
        if count:
            sketch.add(bucket_value(index), count)
    return sketch


# --- distinct users (HLL) ------------------------------------------------------------------


def new_users() -> datasketches.hll_sketch:
    """Returns an empty distinct-user sketch (lg_k=12, HLL_4)."""
    return datasketches.hll_sketch(HLL_LG_K, _HLL_TYPE)


def add_user(sketch: datasketches.hll_sketch, user_key: str) -> None:
    """Adds one user key to ``sketch`` in place."""
    sketch.update(user_key)


def merge_users(sketches: Iterable[datasketches.hll_sketch]) -> datasketches.hll_sketch:
    """Returns a new sketch of the union; the inputs are not modified.

    A union costs about 35 µs (dense sketches), so merge many sketches in one call. After a
    union the estimate comes from HLL's composite estimator instead of the HIP one, so it can
    differ from that of a single sketch of the same users by a fraction of the standard error.
    """
    union = datasketches.hll_union(HLL_LG_K)
    for sketch in sketches:
        union.update(sketch)
    return union.get_result(_HLL_TYPE)


def users_estimate(sketch: datasketches.hll_sketch) -> int:
    """Returns the estimated number of distinct users, rounded to an int."""
    return round(sketch.get_estimate())


def serialize_users(sketch: datasketches.hll_sketch) -> bytes:
    """Returns the compact DataSketches serialization (readable by any DataSketches library)."""
    return bytes(sketch.serialize_compact())


def deserialize_users(data: bytes) -> datasketches.hll_sketch:
    """Inverse of ``serialize_users``."""
    return datasketches.hll_sketch.deserialize(data)


# DataSketches HLL serialization (its documented preamble): byte 3 lg_k, byte 4 lg of the
# coupon-set array, byte 6 the list's coupon count, byte 7 the mode in its low 2 bits; a list
# stores its coupons from byte 8, a set its count at byte 8 and its hash table from byte 12;
# HLL_8 registers, one byte each, follow a 40-byte preamble.
_LIST, _SET = 0, 1
_HLL_PREAMBLE_BYTES = 40


def users_content(data: bytes) -> tuple[str, frozenset[int] | bytes]:
    """What a distinct-user sketch (``serialize_users`` bytes) holds, independent of how it was
    built: the set of coupons while the sketch is small, its registers once it is not.

    Two sketches of the same users can serialize differently (a union flags its result as out
    of order and estimates with another estimator; HLL_4 stores exceptions apart), so bytes
    and estimates are not comparable; this is: both go through one union into HLL_8 and are
    read in DataSketches' serialization format.
    """
    union = datasketches.hll_union(HLL_LG_K)
    union.update(deserialize_users(data))
    raw = bytes(union.get_result(datasketches.tgt_hll_type.HLL_8).serialize_updatable())
    mode = raw[7] & 3
    if mode == _LIST:
        count = raw[6]
        return "list", frozenset(struct.unpack_from(f"<{count}I", raw, 8))
    if mode == _SET:
        slots = struct.unpack_from(f"<{1 << raw[4]}I", raw, 12)
        return "set", frozenset(coupon for coupon in slots if coupon)
    k = 1 << raw[3]
    return "hll", raw[_HLL_PREAMBLE_BYTES : _HLL_PREAMBLE_BYTES + k]
