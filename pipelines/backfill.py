"""Batch pipeline: backfill from JSON-lines files, or replay the redacted raw archive.

Bounded. The same core transform as streaming; only reading and writing differ. Sinks
(``--sink``): the embedded ones (default) or Google Cloud (``pipelines.gcp``), as in streaming.

    python -m pipelines.backfill --input 'events/*.jsonl' --output_root ./out
    python -m pipelines.backfill --input_format avro --input ./out \\
        --start_date 2026-11-01 --end_date 2026-11-07 --regions us,eu --output_root ./out

With ``--input_format json`` every line is one gateway event; events are parsed, redacted,
deduplicated over the whole input (exact), aggregated and archived. With ``avro``, ``--input``
is the root holding ``raw/`` and only the partitions selected by ``--start_date``,
``--end_date`` and ``--regions`` are read (by path); the events are already redacted, so the
replay starts at deduplication and does not rewrite the archive.
"""

from __future__ import annotations

import datetime as dt
import sys

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.timestamp import Timestamp

from pipelines.common import LogProgress, add_core_options, core_config, validate_core
from pipelines.launch import configure_logging, launch
from pipelines.sinks import (
    add_sink_options,
    describe_sinks,
    output_lines,
    validate_sinks,
    write_outputs,
)
from pipelines.tally import TallyOutcomes, tally_inputs
from transforms.analyze import AnalyzeEvents
from transforms.elements import RedactedEvent

__all__ = ["BackfillOptions", "build", "partition_patterns", "run"]

INPUT_FORMATS = ("json", "avro")


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
        parser.add_argument("--start_date", help="avro: first event_date to read (YYYY-MM-DD).")
        parser.add_argument("--end_date", help="avro: last event_date to read, inclusive.")
        parser.add_argument("--regions", help="avro: comma-separated regions (default: all).")


def _date(value: str | None, flag: str, problems: list[str]) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        problems.append(f"--{flag} must be a date YYYY-MM-DD")
        return None


def validate(options: BackfillOptions) -> list[str]:
    problems = validate_core(options) + validate_sinks(options)
    if not options.input:
        problems.append("--input is required")
    if options.input_format not in INPUT_FORMATS:
        problems.append(f"--input_format must be one of {INPUT_FORMATS}")
    start = _date(options.start_date, "start_date", problems)
    end = _date(options.end_date, "end_date", problems)
    if options.input_format == "json" and (start or end or options.regions):
        problems.append("--start_date/--end_date/--regions select archive partitions: avro only")
    if options.input_format == "avro" and bool(start) != bool(end):
        problems.append("--start_date and --end_date go together")
    if start and end and end < start:
        problems.append("--end_date is before --start_date")
    return problems


def partition_patterns(
    root: str, start: dt.date | None, end: dt.date | None, regions: list[str] | None
) -> list[str]:
    """Globs of the archive partitions to read: one per (date, region), by path only."""
    region_parts = regions or ["*"]
    if start is None or end is None:
        dates = ["*"]
    else:
        dates = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    return [
        FileSystems.join(root, "raw", f"event_date={d}", f"region={r}", "*.avro")
        for d in dates
        for r in region_parts
    ]


def _redacted_event(record: dict) -> beam.window.TimestampedValue:
    record["event_id"] = str(record["event_id"])  # fastavro reads the uuid logical type as UUID
    record["policy_flags"] = tuple(record["policy_flags"])
    event = RedactedEvent(**record)
    return beam.window.TimestampedValue(event, Timestamp.from_utc_datetime(event.event_time))


class _ReadAvroFn(beam.DoFn):
    def process(self, readable: fileio.ReadableFile):
        import fastavro

        with readable.open() as handle:
            yield from fastavro.reader(handle)


def build(pipeline: beam.Pipeline, options: BackfillOptions) -> dict:
    """Wires the graph and returns the core outputs plus the sinks' results."""
    config = core_config(options)
    if options.input_format == "json":
        raw = (
            pipeline
            | "ReadJsonLines" >> beam.io.ReadFromText(options.input, coder=BytesCoder())
            | "SkipBlankLines" >> beam.Filter(lambda line: bool(line.strip()))
            | "LogProgress" >> LogProgress("lines read")
        )
        outputs = raw | "AnalyzeEvents" >> AnalyzeEvents(config)
        outputs["written"] = write_outputs(outputs, options)
    else:
        raw = _read_archive(pipeline, options)
        outputs = raw | "AnalyzeEvents" >> AnalyzeEvents(config, input_format="redacted")
        outputs["written"] = write_outputs(outputs, options, archive=False)
    outputs["tally"] = tally_inputs(raw, outputs) | "TallyOutcomes" >> TallyOutcomes(
        options.output_root, options.run_id or "latest"
    )
    return outputs


def _read_archive(pipeline: beam.Pipeline, options: BackfillOptions):
    """The archived events of the selected partitions, timestamped with event time."""
    regions = [r.strip() for r in options.regions.split(",")] if options.regions else None
    patterns = partition_patterns(
        options.input,
        _date(options.start_date, "start_date", []),
        _date(options.end_date, "end_date", []),
        regions,
    )
    return (
        pipeline
        | "Partitions" >> beam.Create(patterns)
        | "MatchPartitions" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
        | "OpenFiles" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
        | "ReadAvro" >> beam.ParDo(_ReadAvroFn())
        | "ToEvents" >> beam.Map(_redacted_event)
        | "LogProgress" >> LogProgress("archived events read")
    )


def run(argv: list[str] | None = None) -> int:
    options = PipelineOptions(argv)
    backfill = options.view_as(BackfillOptions)
    described = (
        f"backfill: input_format={backfill.input_format} output_root={backfill.output_root} "
        f"{describe_sinks(backfill)} engine={backfill.redaction_engine}"
    )
    return launch(
        options, backfill, validate(backfill), build, described, outputs=output_lines(backfill)
    )


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
