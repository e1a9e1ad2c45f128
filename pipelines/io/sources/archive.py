"""Read the raw archive back by partition: ``ReadArchivedEvents``.

What the reconciliation, the backfill's recomputation of the partitions it touched, its check
of the copies already archived, the dead-letter replay and ``verify`` read. A partition is an
``(event_date, region)`` pair (``raw/event_date=D/region=R/``); either may be ``*`` (every
date, every region). The texts (``prompt``, ``response``) are skipped while decoding (a reader
schema without them): none of these readers needs them, and they are most of the bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.timestamp import Timestamp

from pipelines.io.sinks.files import partition_value
from schemas.contract import load_schema
from transforms.elements import RedactedEvent

__all__ = ["ReadArchivedEvents", "archived_event", "partition_pattern"]

_TEXTS = ("prompt", "response")


def partition_pattern(root: str, event_date: str, region: str) -> str:
    """The glob of one archive partition's files (``*`` for every date or region)."""
    region_part = region if region == "*" else partition_value(region)
    return FileSystems.join(
        root, "raw", f"event_date={event_date}", f"region={region_part}", "*.avro"
    )


@cache
def _reader_schema() -> dict[str, Any]:
    schema = load_schema("redacted_event")
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in _TEXTS]
    return fastavro.parse_schema(schema)


def archived_event(record: dict[str, Any]) -> RedactedEvent:
    """A record read with the text-less reader schema, as a ``RedactedEvent`` without texts."""
    record["event_id"] = str(record["event_id"])  # fastavro reads the uuid logical type as UUID
    record["policy_flags"] = tuple(record["policy_flags"])
    return RedactedEvent(prompt=None, response=None, **record)


class _ReadPartitionFn(beam.DoFn):
    def process(self, readable: fileio.ReadableFile) -> Iterable[beam.window.TimestampedValue]:
        with readable.open() as handle:
            for record in fastavro.reader(handle, reader_schema=_reader_schema()):
                event = archived_event(record)
                yield beam.window.TimestampedValue(
                    event, Timestamp.from_utc_datetime(event.event_time)
                )


class ReadArchivedEvents(beam.PTransform):
    """Reads the archived events of partitions.

    Input: PCollection[(event_date, region)] (ISO date and region as events carry them, or
    ``*``), bounded; a partition without files reads nothing. Output: PCollection[RedactedEvent]
    without texts, each timestamped with its event time. Files written before a field was added
    read it as its default. Local directories and ``gs://`` alike.

    Args:
      root: the directory (or ``gs://`` prefix) holding ``raw/``.
    """

    def __init__(self, root: str):
        super().__init__()
        self._root = root

    def expand(self, partitions):
        root = self._root
        return (
            partitions
            | "Patterns" >> beam.MapTuple(lambda d, r: partition_pattern(root, d, r))
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "OpenFiles" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "ReadEvents" >> beam.ParDo(_ReadPartitionFn()).with_output_types(RedactedEvent)
        )
