"""Batch pipeline: backfill from JSON-lines files, or reconcile metrics from the raw archive.

Bounded. The same core transform as streaming; only reading and writing differ. Sinks
(``--sink``): the embedded ones (default) or Google Cloud (``pipelines.io.sinks.gcp``), as in
streaming. Runs on the local runner (Beam's ``FnApiRunner``) or on Dataflow (the Flex Template
``templates/backfill``).

    python -m pipelines.backfill --input 'events/*.jsonl' --output_root ./out
    python -m pipelines.backfill --input_format avro --input ./out \\
        --start_date 2026-11-01 --end_date 2026-11-07 --regions us,eu --output_root ./out

With ``--input_format json`` every line is one gateway event; events are parsed, redacted,
deduplicated over the whole input (exact), aggregated and archived. The input is read in chunks
of ``--chunk_bytes`` (``pipelines.io.sources.lines``), twice: a first, cheap pass (parsing only)
picks the copy of each duplicated event id to write, so the main pass never shuffles events
between workers; each chunk's events of one partition become archive files of their own, the
same ones on a re-run. With ``avro``, ``--input`` is the root holding ``raw/`` (a directory or
``gs://``) and only the partitions selected by ``--start_date``, ``--end_date`` and
``--regions`` are read (by path); the events are already redacted, so the replay starts at
deduplication and does not rewrite the archive.

Reconciliation: the archive holds every written event, late or not, and every copy the
streaming dedupe let through after its TTL. Replaying it is exact where streaming is not:
dedupe is global over the whole selected range, and on a bounded input nothing is late, so
every event is in its window. The rows (``source = backfill``, priced with ``--price_table``)
replace the streaming rows of the same keys in the warehouse, and re-running changes nothing.
A window must lie within one day for a day's partitions to hold all of it, so a reconciliation
by date needs ``--window_size_s`` to divide 86,400.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.timestamp import Timestamp

from pipelines.io.sources.avro import ReadAvroRecords
from pipelines.io.sources.lines import DEFAULT_CHUNK_BYTES, ReadLineChunks
from pipelines.launch import configure_logging, launch, parse_options
from pipelines.options import (
    add_core_options,
    add_date_range_options,
    core_config,
    date_range,
    parse_date,
    validate_core,
)
from pipelines.progress import LogProgress, line_count
from pipelines.sinks import (
    PipelineOutputs,
    add_sink_options,
    describe_sinks,
    validate_sinks,
    write_outputs,
)
from transforms.analyze import AnalyzeEvents
from transforms.elements import RedactedEvent

__all__ = ["BackfillOptions", "build", "partition_patterns", "run", "validate"]

INPUT_FORMATS = ("json", "avro")
SECONDS_PER_DAY = 86_400


class BackfillOptions(PipelineOptions):
    """Flags of the backfill pipeline (core flags come from ``add_core_options``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_core_options(parser)
        add_sink_options(parser)
        parser.add_argument(
            "--input", help="json: glob of JSON-lines files; avro: root holding raw/."
        )
        parser.add_argument("--input_format", default="json", help=f"One of {INPUT_FORMATS}.")
        add_date_range_options(parser)
        parser.add_argument("--regions", help="avro: comma-separated regions (default: all).")
        parser.add_argument(
            "--chunk_bytes",
            type=int,
            default=DEFAULT_CHUNK_BYTES,
            help="json: bytes of input per chunk, the unit of work (one archive file per chunk "
            "and partition).",
        )


def validate(options: BackfillOptions) -> list[str]:
    problems = validate_core(options) + validate_sinks(options)
    if not options.input:
        problems.append("--input is required")
    if options.chunk_bytes < 1:
        problems.append("--chunk_bytes must be > 0")
    if options.input_format not in INPUT_FORMATS:
        problems.append(f"--input_format must be one of {INPUT_FORMATS}")
    elif options.input and options.input_format == "json":
        problems += _input_problems(options.input)
    elif options.input:
        problems += _archive_root_problems(options.input)
    start = parse_date(options.start_date, "start_date", problems)
    end = parse_date(options.end_date, "end_date", problems)
    if options.input_format == "json" and (start or end or options.regions):
        problems.append("--start_date/--end_date/--regions select archive partitions: avro only")
    if options.input_format == "avro" and bool(start) != bool(end):
        problems.append("--start_date and --end_date go together")
    if start and end and end < start:
        problems.append("--end_date is before --start_date")
    if start and options.window_size_s > 0 and SECONDS_PER_DAY % options.window_size_s:
        problems.append(
            "--window_size_s must divide a day (86400 s) to reconcile by date: a window across "
            "midnight would be recomputed from one day's partitions only"
        )
    return problems


def _input_problems(pattern: str) -> list[str]:
    """Why ``--input`` cannot be read, checked at launch: it matches nothing, or (local files)
    a match is a directory or cannot be opened for reading."""
    local = FileSystems.get_scheme(pattern) in (None, "file")
    try:
        (result,) = FileSystems.match([pattern], limits=None if local else [1])
    except Exception as exc:  # BeamIOError and the like: no such scheme, no access
        detail = " ".join(str(exc).split())
        return [f"--input {pattern!r} cannot be listed: {detail}"]
    if not result.metadata_list:
        return [f"--input {pattern!r} matches no files"]
    if not local:
        return []
    for metadata in result.metadata_list:
        path = metadata.path
        if os.path.isdir(path):
            return [f"--input {path!r} is a directory: give files or a glob of files"]
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            return [f"--input {path!r} cannot be read ({error.strerror or type(error).__name__})"]
    return []


def _archive_root_problems(root: str) -> list[str]:
    """``--input_format avro``: a local archive root must be an existing directory."""
    if FileSystems.get_scheme(root) not in (None, "file") or os.path.isdir(root):
        return []
    if os.path.lexists(root):
        return [f"--input {root!r} is a file: give the root holding raw/"]
    return [f"--input {root!r} does not exist: give the root holding raw/"]


def partition_patterns(
    root: str, start: dt.date | None, end: dt.date | None, regions: list[str] | None
) -> list[str]:
    """Globs of the archive partitions to read: one per (date, region), by path only."""
    region_parts = regions or ["*"]
    if start is None or end is None:
        dates = ["*"]
    else:
        dates = [d.isoformat() for d in date_range(start, end)]
    return [
        FileSystems.join(root, "raw", f"event_date={d}", f"region={r}", "*.avro")
        for d in dates
        for r in region_parts
    ]


def _redacted_event(record: dict) -> beam.window.TimestampedValue:
    record["event_id"] = str(record["event_id"])  # fastavro reads the uuid logical type as UUID
    record["policy_flags"] = tuple(record["policy_flags"])
    record["unknown_fields"] = tuple(record["unknown_fields"])
    event = RedactedEvent(**record)
    return beam.window.TimestampedValue(event, Timestamp.from_utc_datetime(event.event_time))


def build(pipeline: beam.Pipeline, options: BackfillOptions) -> PipelineOutputs:
    """Wires the graph: the input, the core and the sinks."""
    config = core_config(options)
    if options.input_format == "json":
        raw = (
            pipeline
            | "ReadJsonLines" >> ReadLineChunks(options.input, options.chunk_bytes)
            | "LogProgress" >> LogProgress("lines read", weight=line_count)
        )
        # The exact dedupe picks the copy of each event id to write in a first pass over a
        # second read of the input: reading twice is far cheaper than shuffling the events.
        again = pipeline | "ReadJsonLinesAgain" >> ReadLineChunks(
            options.input, options.chunk_bytes
        )
        core = raw | "AnalyzeEvents" >> AnalyzeEvents(
            config, input_format="json_lines", copies_from=again
        )
        return PipelineOutputs(raw, core, write_outputs(core, options))
    raw = _read_archive(pipeline, options)
    core = raw | "AnalyzeEvents" >> AnalyzeEvents(config, input_format="redacted")
    return PipelineOutputs(raw, core, write_outputs(core, options, archive=False))


def _read_archive(pipeline: beam.Pipeline, options: BackfillOptions):
    """The archived events of the selected partitions, timestamped with event time."""
    regions = [r.strip() for r in options.regions.split(",")] if options.regions else None
    patterns = partition_patterns(
        options.input,
        parse_date(options.start_date, "start_date", []),
        parse_date(options.end_date, "end_date", []),
        regions,
    )
    return (
        pipeline
        | "Partitions" >> beam.Create(patterns)
        | "ReadArchive" >> ReadAvroRecords("redacted_event")
        | "ToEvents" >> beam.Map(_redacted_event)
        | "LogProgress" >> LogProgress("archived events read")
    )


def run(argv: list[str] | None = None) -> int:
    options = parse_options(argv, BackfillOptions, "python -m pipelines.backfill", __doc__)
    backfill = options.view_as(BackfillOptions)
    described = (
        f"backfill: input_format={backfill.input_format} "
        f"{describe_sinks(backfill)} engine={backfill.redaction_engine}"
    )
    return launch(options, backfill, validate, build, described)


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
