"""CombinePerKeyOnDisk (pipelines/local/spill.py): the local runner's per-key combine through
local files gives what ``beam.CombinePerKey`` gives, over one input or several, however often
its workers write out, and leaves no file behind."""

from __future__ import annotations

import os
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipelines.local import spill
from pipelines.local.spill import CombinePerKeyOnDisk
from tests.support.pipelines import TestPipeline


class _SortedUnique(beam.CombineFn):
    """A combine whose accumulator is a set (unordered, so merge order cannot show)."""

    def create_accumulator(self):
        return set()

    def add_input(self, acc, value):
        acc.add(value)
        return acc

    def merge_accumulators(self, accumulators):
        merged = set()
        for acc in accumulators:
            merged |= acc
        return merged

    def extract_output(self, acc):
        return sorted(acc)


def _pairs(seed: int, n: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(f"k{rng.randrange(17)}", rng.randrange(50)) for _ in range(n)]


@pytest.mark.parametrize("flush_every", [1, 7, 100_000])
def test_the_same_as_combine_per_key_over_two_inputs(tmp_path, flush_every):
    first, second = _pairs(1, 400), _pairs(2, 300)
    directory = str(tmp_path / "spill")
    expected = {}
    for key, value in first + second:
        expected.setdefault(key, set()).add(value)
    with TestPipeline() as p:
        a = p | "A" >> beam.Create(first)
        b = p | "B" >> beam.Create(second)
        on_disk = (a, b) | "OnDisk" >> CombinePerKeyOnDisk(
            _SortedUnique(), directory=directory, flush_every=flush_every
        )
        in_memory = (a, b) | beam.Flatten() | beam.CombinePerKey(_SortedUnique())
        assert_that(on_disk, equal_to([(k, sorted(v)) for k, v in expected.items()]))
        assert_that(in_memory, equal_to([(k, sorted(v)) for k, v in expected.items()]), "Same")
    assert not os.path.exists(directory)  # removed once every key was merged


def test_one_input_and_a_key_seen_once(tmp_path):
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([("a", 1), ("b", 2), ("a", 3)])
            | CombinePerKeyOnDisk(
                beam.combiners.CountCombineFn(), directory=str(tmp_path / "s"), flush_every=2
            )
        )
        assert_that(out, equal_to([("a", 2), ("b", 1)]))


def test_accumulators_read_back_as_written_and_a_cut_file_is_an_error(tmp_path):
    refs = spill._write_accumulators(str(tmp_path), {"a": {1, 2}, "b": [("x", b"\x00")]})
    assert [key for key, _ in refs] == ["a", "b"]
    assert list(spill._read_accumulators(ref for _, ref in reversed(refs))) == [
        {1, 2},
        [("x", b"\x00")],
    ]
    (path, offset, length) = refs[1][1]
    with open(path, "r+b") as f:
        f.truncate(offset + length - 1)
    with pytest.raises(OSError, match="cut short"):
        list(spill._read_accumulators([refs[1][1]]))


def test_bounded_input_only_and_a_positive_flush():
    with pytest.raises(ValueError, match="flush_every"):
        CombinePerKeyOnDisk(beam.combiners.CountCombineFn(), flush_every=0)
    with pytest.raises(ValueError, match="bounded"), TestPipeline() as p:
        stream = p | TestStream().add_elements(["a"]).advance_watermark_to_infinity()
        _ = (
            stream
            | beam.Map(lambda m: (m, 1))
            | CombinePerKeyOnDisk(beam.combiners.CountCombineFn())
        )
