"""Read JSON-lines files in chunks of lines, with each line's byte offset: ``ReadLineChunks``.

What the backfill reads its input with. Beam's ``ReadFromText`` gives one element per line and
no positions; the core works a chunk of lines per element (``transforms.elements.LineChunk``)
and the exact batch dedupe breaks ties between copies by their position in the input, so this
reader cuts every file into fixed byte ranges of ``chunk_bytes`` and reads each range as one
chunk. A line belongs to the range its first byte is in (Hadoop's rule), so the chunks of a
file hold every line exactly once; the ranges depend only on the file's size, so every read of
the same files (the dedupe's two passes, a re-run) gives the same chunks.

Lines are split on ``\\n`` (a trailing ``\\r`` is left to the JSON parser, which takes it as
whitespace); blank lines are skipped. Files whose name says they are compressed (``.gz``,
``.bz2``, ...: Beam's ``CompressionTypes.AUTO``) cannot be split: each is read whole, then cut
into chunks of about ``chunk_bytes`` of decompressed lines, offsets counting decompressed
bytes. Files are opened through Beam's ``FileSystems``, so ``gs://`` works as a local path does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.elements import LineChunk

__all__ = ["DEFAULT_CHUNK_BYTES", "ReadLineChunks", "line_ranges", "read_range"]

DEFAULT_CHUNK_BYTES = 16 << 20
_READ_BLOCK = 1 << 16  # how far past a range's end to look for the end of its last line


def line_ranges(size: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` a file of ``size`` bytes is read in."""
    return [(start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]


def _chunk(source: str, data: bytes, base: int) -> LineChunk:
    """The non-blank lines of ``data`` (which starts at byte ``base`` of ``source``)."""
    lines: list[bytes] = []
    offsets: list[int] = []
    position = base
    for line in data.split(b"\n"):
        if line.strip():
            lines.append(line)
            offsets.append(position)
        position += len(line) + 1
    return LineChunk(source, tuple(lines), tuple(offsets))


def read_range(handle, source: str, start: int, end: int) -> LineChunk:
    """The lines that start in ``[start, end)`` of the seekable binary ``handle``."""
    first = max(start - 1, 0)
    handle.seek(first)
    data = handle.read(end - first)
    if start > 0:
        # data[0] is the byte before the range: a line starts at `start` only after a newline.
        newline = data.find(b"\n")
        if newline < 0:
            return LineChunk(source, ())
        data, base = data[newline + 1 :], first + newline + 1
    else:
        base = 0
    if data and not data.endswith(b"\n"):
        # The last line started inside the range: read on to its end.
        tail = []
        while block := handle.read(_READ_BLOCK):
            newline = block.find(b"\n")
            if newline >= 0:
                tail.append(block[:newline])
                break
            tail.append(block)
        data += b"".join(tail)
    return _chunk(source, data, base)


def _now_us() -> int:
    return time.time_ns() // 1000


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


class _SplitFilesFn(beam.DoFn):
    """One ``(path, start, end)`` per range of a matched file; compressed files whole."""

    def __init__(self, chunk_bytes: int):
        self._chunk_bytes = chunk_bytes

    def process(self, metadata: FileMetadata) -> Iterator[tuple[str, int, int]]:
        if _compressed(metadata.path):
            yield metadata.path, 0, -1
            return
        for start, end in line_ranges(metadata.size_in_bytes, self._chunk_bytes):
            yield metadata.path, start, end


class _ReadRangeFn(beam.DoFn):
    def __init__(self, chunk_bytes: int):
        self._chunk_bytes = chunk_bytes

    def process(self, file_range: tuple[str, int, int]) -> Iterator[LineChunk]:
        path, start, end = file_range
        if end < 0:
            yield from self._read_compressed(path)
            return
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            chunk = read_range(handle, path, start, end)
        if chunk.lines:
            yield chunk._replace(ingested_us=(_now_us(),))

    def _read_compressed(self, path: str) -> Iterator[LineChunk]:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            data = handle.read()
        base = 0
        while base < len(data):
            cut = data.find(b"\n", base + self._chunk_bytes - 1)
            stop = len(data) if cut < 0 else cut + 1
            chunk = _chunk(path, data[base:stop], base)
            if chunk.lines:
                yield chunk._replace(ingested_us=(_now_us(),))
            base = stop


class ReadLineChunks(beam.PTransform):
    """Reads the files matching ``pattern`` as ``LineChunk`` elements (bounded).

    Output: PCollection[LineChunk], one per ``chunk_bytes`` range of each file (see the module
    docstring), ``source`` the file's path, ``offsets`` each line's byte offset (the lines'
    identities are ``<path>#<offset>``) and ``ingested_us`` when the chunk was read; every
    non-blank line of every file is in exactly one chunk, and the same files always give the
    same chunks. A pattern that matches nothing is an error (``fileio.MatchFiles``).

    Args:
      pattern: a ``FileSystems`` glob (local path or ``gs://``).
      chunk_bytes: bytes of input per chunk: the unit of work, and of the archive files a
        backfill writes (one per chunk and partition).
    """

    def __init__(self, pattern: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        super().__init__()
        if not pattern:
            raise ValueError("pattern must name the files to read")
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be >= 1")
        self._pattern = pattern
        self._chunk_bytes = chunk_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern)
            | "SplitFiles" >> beam.ParDo(_SplitFilesFn(self._chunk_bytes))
            # Ranges are small elements: spread them over the workers before reading.
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges"
            >> beam.ParDo(_ReadRangeFn(self._chunk_bytes)).with_output_types(LineChunk)
        )
