"""Line ranges and reads of ReadLineChunks as plain functions: every non-blank line exactly
once, with its byte offset, however the file is cut; and the composite's validation."""

from __future__ import annotations

import io
import random

import pytest

from pipelines.io.sources.lines import ReadLineChunks, line_ranges, read_range
from tests.support.lines import lines_with_offsets


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
        expected = lines_with_offsets(data)
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


def test_configuration_is_validated():
    with pytest.raises(ValueError, match="pattern"):
        ReadLineChunks("")
    with pytest.raises(ValueError, match="chunk_bytes"):
        ReadLineChunks("x", chunk_bytes=0)
