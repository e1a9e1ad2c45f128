"""ReadLineChunks in a pipeline: plain and compressed files read in chunks of about chunk_bytes."""

from __future__ import annotations

import gzip
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.io.sources.lines import ReadLineChunks
from tests.support.lines import lines_with_offsets
from tests.support.pipelines import TestPipeline


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_pipeline_reads_plain_and_compressed_files(tmp_path):
    rng = random.Random(3)
    plain = b"".join(
        b'{"n": %d, "pad": "%s"}\n' % (i, b"p" * rng.randint(0, 90)) for i in range(300)
    )
    a = _write(tmp_path / "a.jsonl", plain)
    b = _write(tmp_path / "b.jsonl.gz", gzip.compress(plain))
    expected = [
        (path, offset, line) for path in (a, b) for offset, line in lines_with_offsets(plain)
    ]
    with TestPipeline() as p:
        chunks = p | ReadLineChunks(str(tmp_path / "*"), chunk_bytes=1000)
        flat = chunks | beam.FlatMap(
            lambda c: [(c.source, o, line) for o, line in zip(c.offsets, c.lines, strict=True)]
        )
        assert_that(flat, equal_to(expected), label="every line once")
        assert_that(
            chunks | "Sizes" >> beam.Map(lambda c: sum(len(line) + 1 for line in c.lines) <= 1200),
            lambda sizes: (all(sizes) and len(sizes) > 20) or pytest.fail(f"{sizes}"),
            label="chunks of about chunk_bytes",
        )
