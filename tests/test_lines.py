"""ReadLineChunks: every non-blank line exactly once, with its byte offset, however it is cut."""

from __future__ import annotations

import gzip
import io
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.io.sources.lines import ReadLineChunks, line_ranges, read_range
from tests.support.pipelines import TestPipeline


def _lines_with_offsets(data: bytes) -> list[tuple[int, bytes]]:
    """The reference: (offset, line) of every non-blank line, by a plain scan."""
    out, position = [], 0
    for line in data.split(b"\n"):
        if line.strip():
            out.append((position, line))
        position += len(line) + 1
    return out


def _random_file(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 40)):
        kind = rng.random()
        if kind < 0.1:
            lines.append(b"")  # blank line
        elif kind < 0.15:
            lines.append(b"  \r")  # whitespace only
        else:
            body = bytes(rng.choice(b'abc{}":, \xc3\xa9') for _ in range(rng.randint(1, 30)))
            lines.append(body + (b"\r" if rng.random() < 0.2 else b""))
    data = b"\n".join(lines)
    if lines and rng.random() < 0.5:
        data += b"\n"
    return data


def _read_all(data: bytes, chunk_bytes: int) -> list[tuple[int, bytes]]:
    handle = io.BytesIO(data)
    out = []
    for start, end in line_ranges(len(data), chunk_bytes):
        chunk = read_range(handle, "f", start, end)
        assert chunk.source == "f"
        out.extend(zip(chunk.offsets, chunk.lines, strict=True))
    return out


def test_every_line_once_with_its_offset_for_any_cut():
    rng = random.Random(11)
    for _ in range(400):
        data = _random_file(rng)
        expected = _lines_with_offsets(data)
        for chunk_bytes in {1, 2, 3, 7, rng.randint(1, 60), len(data) or 1, len(data) + 5}:
            got = _read_all(data, chunk_bytes)
            assert got == expected, (data, chunk_bytes)
            assert all(data[o : o + len(line)] == line for o, line in got)


def test_a_range_without_a_line_start_is_empty():
    data = b"x" * 50 + b"\n" + b"second\n"
    assert read_range(io.BytesIO(data), "f", 10, 20).lines == ()
    assert read_range(io.BytesIO(data), "f", 0, 10).lines == (b"x" * 50,)
    assert read_range(io.BytesIO(data), "f", 51, 52).offsets == (51,)


def test_ranges_depend_only_on_the_size():
    assert line_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert line_ranges(0, 4) == []


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
        (path, offset, line) for path in (a, b) for offset, line in _lines_with_offsets(plain)
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


def test_configuration_is_validated():
    with pytest.raises(ValueError, match="pattern"):
        ReadLineChunks("")
    with pytest.raises(ValueError, match="chunk_bytes"):
        ReadLineChunks("x", chunk_bytes=0)
