"""Batch pipeline: backfill from JSON-lines files, or reconcile metrics from the raw archive.

Bounded. The same core transform as streaming; only reading and writing differ. Sinks
(``--sink``): the embedded ones (default) or Google Cloud (``pipelines.io.sinks.gcp``), as in
streaming. Runs on the local runner (Beam's ``FnApiRunner``) or on Dataflow (the Flex Template
``templates/backfill``).

    python -m pipelines.backfill --input 'events/*.jsonl' --output_root ./out
    python -m pipelines.backfill --input_format avro --input ./out \\
        --start_date 2026-11-01 --end_date 2026-11-07 --regions us,eu --output_root ./out

With ``--input_format json`` every line is one gateway event; events are parsed, redacted,
deduplicated over the whole input and the archive (exact: ``transforms.winner``'s rule, first
archived wins) and archived. The input is read in chunks of ``--chunk_bytes``
(``pipelines.io.sources.lines``), twice: a first, cheap pass (parsing only) picks the copy of
each duplicated event id to write, reading the copies already archived in the partitions the
input falls in, so the main pass never shuffles events between workers; each chunk's events of
one partition become archive files of their own, the same ones on a re-run. Event times are
checked against the run's reference clock (``--now``, ``pipelines.clock``), so a re-run gives
every line the same outcome. Metrics are a function of the archive: once the archive is
written, the same pipeline recomputes every (event_date, region) partition it wrote into from
the whole archive and upserts those rows (``RecomputeTouchedMetrics``), so a backfill never
replaces a window with the count of its own input alone
(``docs/adr/0014-metrics-are-recomputed-from-the-archive.md``).

With ``avro``, ``--input`` is the root holding ``raw/`` (a directory or ``gs://``) and only
the partitions selected by ``--start_date``, ``--end_date`` and ``--regions`` are read (by
path); the events are already redacted, so the replay starts at deduplication and does not
rewrite the archive.

Reconciliation: the archive holds every written event, late or not, and every copy the
streaming dedupe let through after its TTL. Replaying it is exact where streaming is not:
dedupe is global over the whole selected range (first archived wins), and on a bounded input
nothing is late, so every event is in its window. The rows (``source = backfill``, priced with
``--price_table``) replace the streaming rows of the same keys in the warehouse, and re-running
changes nothing.
A window must lie within one day for a day's partitions to hold all of it, so a reconciliation
by date needs ``--window_size_s`` to divide 86,400.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import urllib.parse

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.clock import add_now_option, now_problems, reference_now
from pipelines.io.sources.archive import ReadArchivedEvents, partition_pattern
from pipelines.io.sources.lines import DEFAULT_CHUNK_BYTES, ReadLineChunks
from pipelines.launch import configure_logging, launch, parse_options
from pipelines.options import (
    add_core_options,
    add_date_range_options,
    add_flag,
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
    gcp_config,
    validate_sinks,
    write_outputs,
)
from transforms.analyze import AnalyzeEvents, CoreConfig, CoreOutputs

__all__ = [
    "BackfillOptions",
    "RecomputeTouchedMetrics",
    "archive_root",
    "build",
    "partition_patterns",
    "partitions",
    "run",
    "touched_partition",
    "validate",
]

INPUT_FORMATS = ("json", "avro")
SECONDS_PER_DAY = 86_400


class BackfillOptions(PipelineOptions):
    """Flags of the backfill pipeline (core flags come from ``add_core_options``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_core_options(parser)
        add_sink_options(parser)
        add_now_option(parser)
        parser.add_argument(
            "--input", help="json: glob of JSON-lines files; avro: root holding raw/."
        )
        parser.add_argument("--input_format", default="json", help=f"One of {INPUT_FORMATS}.")
        add_date_range_options(parser)
        add_flag(parser, "--regions", help="avro: comma-separated regions (default: all).")
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
    problems += now_problems(options.now)  # json only: an archive replay checks no clock
    # A json backfill recomputes the days it wrote into; a reconciliation reads whole days.
    if (start or options.input_format == "json") and (
        options.window_size_s > 0 and SECONDS_PER_DAY % options.window_size_s
    ):
        problems.append(
            "--window_size_s must divide a day (86400 s) to recompute metrics by date: a window "
            "across midnight would be recomputed from one day's partitions only"
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


def partitions(
    start: dt.date | None, end: dt.date | None, regions: list[str] | None
) -> list[tuple[str, str]]:
    """The archive partitions to read, (event_date, region), ``*`` for every date or region."""
    dates = (
        ["*"] if start is None or end is None else [d.isoformat() for d in date_range(start, end)]
    )
    return [(d, r) for d in dates for r in regions or ["*"]]


def partition_patterns(
    root: str, start: dt.date | None, end: dt.date | None, regions: list[str] | None
) -> list[str]:
    """Globs of the archive partitions to read: one per (date, region), by path only."""
    return [partition_pattern(root, d, r) for d, r in partitions(start, end, regions)]


def archive_root(options) -> str:
    """Where the archive is: ``--raw_root`` with ``--sink gcp``, else ``--output_root``."""
    return gcp_config(options).raw_root if options.sink == "gcp" else options.output_root


_TOUCHED = re.compile(r"/event_date=([^/]+)/region=([^/]+)/[^/]+$")


def touched_partition(written: tuple[str, int]) -> tuple[str, str]:
    """The (event_date, region) of an archive file written, from its path."""
    match = _TOUCHED.search(written[0].replace("\\", "/"))
    if match is None:
        raise ValueError(f"not an archive file: {written[0]}")
    return match.group(1), urllib.parse.unquote(match.group(2))


def touched_date(written: tuple[str, int]) -> tuple[str, str]:
    """The partitions to recompute for an archive file written: its whole ``event_date``, every
    region (``usage_hourly`` rows are per user, model and hour, not per region)."""
    return touched_partition(written)[0], "*"


class RecomputeTouchedMetrics(beam.PTransform):
    """Recomputes the metrics and usage of every day a run wrote into, from the whole archive,
    and writes them.

    Input: the archive writer's output, PCollection[(path, record_count)], bounded. The
    days are gathered in one combine, which in a batch pipeline completes only when every
    file is written: the read that follows sees this run's files too. Each ``event_date`` is
    read whole, every region (``ReadArchivedEvents``), deduplicated by the archive's rule and
    aggregated (``AnalyzeEvents`` on ``redacted`` input), and its metric and usage rows are
    upserted (``source = backfill``): the same rows a reconciliation of those days would write.
    """

    def __init__(self, options, config: CoreConfig):
        super().__init__()
        self._options = options
        self._config = config

    def expand(self, raw_files):
        recomputed = (
            raw_files
            | "TouchedDays" >> beam.Map(touched_date).with_output_types(tuple[str, str])
            | "AllWritten" >> beam.combiners.ToSet()
            | "EachPartition" >> beam.FlatMap(sorted).with_output_types(tuple[str, str])
            | "ReadArchived" >> ReadArchivedEvents(archive_root(self._options))
            | "AnalyzeArchived" >> AnalyzeEvents(self._config, input_format="redacted")
        )
        pipeline = raw_files.pipeline
        nothing = [pipeline | f"No{name}" >> beam.Create([]) for name in ("Events", "Audit")]
        metrics_only = CoreOutputs(
            events=nothing[0],
            duplicates=recomputed.duplicates,
            metrics=recomputed.metrics,
            audit=nothing[1],
            dead_letters=recomputed.dead_letters,
            usage=recomputed.usage,
            metric_dead_letters=recomputed.metric_dead_letters,
            conflicts=recomputed.conflicts,
        )
        return write_outputs(metrics_only, self._options, archive=False)


def _launch_time() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pin_clock(options: BackfillOptions) -> str:
    """The run's reference clock (``pipelines.clock``), recorded under the archive root."""
    return reference_now(
        archive_root(options), f"backfill:{options.input}", options.now, _launch_time()
    )


def build(pipeline: beam.Pipeline, options: BackfillOptions) -> PipelineOutputs:
    """Wires the graph: the input, the core and the sinks. A JSON-lines backfill checks event
    times against ``options.now`` (``run`` pins it first; empty: the time of the build) and
    recomputes the metrics of the partitions it writes into; an archive replay
    (reconciliation) writes the metrics and audit of the partitions it reads."""
    config = core_config(options)
    if options.input_format == "json":
        config = config._replace(now=options.now)
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
            config,
            input_format="json_lines",
            copies_from=again,
            read_archived=ReadArchivedEvents(archive_root(options)),
        )
        # The core's own metric panes count this run's events only: the archive's partitions
        # are recomputed instead, once written (the run totals still count the core's panes).
        sinks = write_outputs(core, options, metrics=False)
        _ = sinks.raw_files | "RecomputeTouchedMetrics" >> RecomputeTouchedMetrics(options, config)
        return PipelineOutputs(raw, core, sinks)
    raw = _read_archive(pipeline, options)
    core = raw | "AnalyzeEvents" >> AnalyzeEvents(config, input_format="redacted")
    if options.regions:
        # usage_hourly rows are per user, model and hour across regions: a reconciliation of
        # some regions would replace them with partial sums, so it leaves them as they are.
        core = core._replace(usage=pipeline | "NoUsage" >> beam.Create([]))
    return PipelineOutputs(raw, core, write_outputs(core, options, archive=False))


def _build_with_pinned_clock(pipeline: beam.Pipeline, options: BackfillOptions):
    """``build``, after pinning the run's reference clock (read or recorded under the archive
    root, ``pipelines.clock``) for a JSON-lines input: on the launcher, before the graph."""
    if options.input_format == "json":
        options.now = _pin_clock(options)
    return build(pipeline, options)


def _read_archive(pipeline: beam.Pipeline, options: BackfillOptions):
    """The archived events of the selected partitions, timestamped with event time."""
    regions = [r.strip() for r in options.regions.split(",")] if options.regions else None
    selected = partitions(
        parse_date(options.start_date, "start_date", []),
        parse_date(options.end_date, "end_date", []),
        regions,
    )
    return (
        pipeline
        | "Partitions" >> beam.Create(selected)
        | "ReadArchive" >> ReadArchivedEvents(options.input)
        | "LogProgress" >> LogProgress("archived events read")
    )


def run(argv: list[str] | None = None) -> int:
    options = parse_options(argv, BackfillOptions, "python -m pipelines.backfill", __doc__)
    backfill = options.view_as(BackfillOptions)
    described = (
        f"backfill: input_format={backfill.input_format} "
        f"{describe_sinks(backfill)} engine={backfill.redaction_engine}"
    )
    return launch(options, backfill, validate, _build_with_pinned_clock, described)


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
