"""Read the Avro files the pipelines write: the raw archive and the dead letters.

``ReadAvroRecords`` reads every file matching each input pattern, resolving each record against
the contract's current schema (so files written before a field was added read it as its
default); ``dead_letter_patterns`` names the dead-letter files of given failure dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.contract import parsed_schema

__all__ = ["ReadAvroRecords", "dead_letter_patterns"]


def dead_letter_patterns(root: str, dates: Iterable[dt.date]) -> list[str]:
    """Globs of the dead-letter files of the given failure dates, by path only."""
    return [FileSystems.join(root, "dead_letter", f"dt={d.isoformat()}", "*.avro") for d in dates]


class _ReadAvroFn(beam.DoFn):
    """Reads one file's records, resolved against the contract's current schema."""

    def __init__(self, schema_name: str):
        self._schema_name = schema_name

    def setup(self) -> None:
        self._schema = parsed_schema(self._schema_name)

    def process(self, readable: fileio.ReadableFile) -> Iterable[dict[str, Any]]:
        with readable.open() as handle:
            yield from fastavro.reader(handle, reader_schema=self._schema)


class ReadAvroRecords(beam.PTransform):
    """Reads the records of the Avro files that match each input pattern.

    Input: PCollection[str] of file patterns (``FileSystems`` globs, so ``gs://`` works); a
    pattern matching nothing reads nothing (a day without data). Output: PCollection[dict], each
    record resolved against the current ``schema_name`` schema, so files written before a field
    was added read it as its default. Bounded.
    """

    def __init__(self, schema_name: str):
        super().__init__()
        parsed_schema(schema_name)  # Validate the schema name at construction.
        self._schema_name = schema_name

    def expand(self, patterns):
        return (
            patterns
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "OpenFiles" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "ReadRecords" >> beam.ParDo(_ReadAvroFn(self._schema_name))
        )
