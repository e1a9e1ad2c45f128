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
written, the same pipeline upserts the rows of every day it wrote into as the whole archive
gives them (``RecomputeTouchedMetrics``: its own rows for a day that held nothing before, rows
recomputed from the archive for the others), so a backfill never replaces a window with the
count of its own input alone
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

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.clock import add_now_option, now_problems, reference_now
from pipelines.io.sinks import SinkOutputs
from pipelines.io.sources.archive import ReadArchivedEvents, partition_pattern
from pipelines.io.sources.lines import DEFAULT_CHUNK_BYTES, ReadLineChunks
from pipelines.launch import configure_logging, launch, on_dataflow, parse_options
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


_TOUCHED = re.compile(r"/event_date=([^/]+)/region=([^/]+)/([^/]+)$")


def _file_in_day(path: str) -> tuple[str, str]:
    """``(event_date, "region=R/name")`` of an archive file's path: the part that names it
    within its day, whatever the form of the root (relative, absolute, ``gs://``)."""
    match = _TOUCHED.search(path.replace("\\", "/"))
    if match is None:
        raise ValueError(f"not an archive file: {path}")
    return match.group(1), f"region={match.group(2)}/{match.group(3)}"


_RECOMPUTE = "recompute"
_ARCHIVE_WRITER = ":write_redacted_event"  # the step of the archive writer's dead letters


class _SortDaysFn(beam.DoFn):
    """``(event_date, files this run wrote there)`` -> the date, when the day's archive holds
    exactly this run's files (the run's own panes are then the day's rows), else the date on
    ``_RECOMPUTE``: the day held files before, another writer added some, or the archive
    writer could not encode some of this run's events (``unarchived`` > 0), so the run's panes
    count events the archive does not hold."""

    def __init__(self, root: str):
        self._root = root

    def process(self, day: tuple[str, list[str]], unarchived: int):
        event_date, ours = day
        if unarchived:
            yield beam.pvalue.TaggedOutput(_RECOMPUTE, event_date)
            return
        pattern = partition_pattern(self._root, event_date, "*")
        listed = {
            _file_in_day(found.path)[1]
            for result in FileSystems.match([pattern])
            for found in result.metadata_list
        }
        if listed <= set(ours):
            yield event_date
        else:
            yield beam.pvalue.TaggedOutput(_RECOMPUTE, event_date)


def _in_days(day_of, days: list[str]) -> bool:
    return day_of.date().isoformat() in days  # a run's own days: a handful


class RecomputeTouchedMetrics(beam.PTransform):
    """Writes the metrics and usage of every day a run wrote into as the whole archive gives
    them: the run's own rows for a day whose archive holds only this run's files, the rows
    recomputed from the archive for the others.

    Input: the archive writer's output, PCollection[(path, record_count)], bounded. The days
    are gathered by a grouping, which in a batch pipeline completes only when every file is
    written: what follows sees this run's files too. A day the archive held files of before
    (or that another writer added to) is read whole, every region (``ReadArchivedEvents``;
    ``usage_hourly`` rows are per user, model and hour across regions), deduplicated by the
    archive's rule and aggregated (``AnalyzeEvents`` on ``redacted`` input): the rows a
    reconciliation of that day would write. A day that held nothing but this run's files is
    exactly this run's events, so the run's own panes (``core``) are its rows and the read is
    skipped. Rows are upserted with ``source = backfill``.

    Returns ``CoreOutputs`` holding the rows written (``metrics``, ``usage``) and this run's
    ``metric_dead_letters`` (a recomputation's would repeat earlier runs'), the other outputs
    empty, and the ``SinkOutputs`` of writing them.
    """

    def __init__(self, options, config: CoreConfig, core: CoreOutputs, sink_dead_letters=None):
        super().__init__()
        self._options = options
        self._config = config
        self._core = core
        self._sink_dead_letters = sink_dead_letters

    def expand(self, raw_files):
        root = archive_root(self._options)
        pipeline = raw_files.pipeline
        failed = self._sink_dead_letters
        if failed is None:
            failed = pipeline | "NoSinkDeadLetters" >> beam.Create([])
        unarchived = (
            failed
            | "Unarchived" >> beam.Filter(lambda d: d.reason.endswith(_ARCHIVE_WRITER))
            | "CountUnarchived" >> beam.combiners.Count.Globally()
        )
        days = (
            raw_files
            | "FileByDay" >> beam.Map(lambda written: _file_in_day(written[0]))
            | "FilesOfEachDay" >> beam.GroupByKey()
            | "SortDays"
            >> beam.ParDo(_SortDaysFn(root), beam.pvalue.AsSingleton(unarchived)).with_outputs(
                _RECOMPUTE, main="own"
            )
        )
        own = beam.pvalue.AsList(days.own)
        recomputed = (
            days[_RECOMPUTE]
            | "EveryRegion" >> beam.Map(lambda day: (day, "*")).with_output_types(tuple[str, str])
            | "ReadArchived" >> ReadArchivedEvents(root)
            | "AnalyzeArchived" >> AnalyzeEvents(self._config, input_format="redacted")
        )
        core = self._core
        metrics = (
            core.metrics
            | "OwnDayMetrics" >> beam.Filter(lambda r, d: _in_days(r.window_start, d), own),
            recomputed.metrics,
        ) | "Metrics" >> beam.Flatten()
        usage = (
            core.usage | "OwnDayUsage" >> beam.Filter(lambda r, d: _in_days(r.hour_start, d), own),
            recomputed.usage,
        ) | "Usage" >> beam.Flatten()
        nothing = [
            pipeline | f"No{name}" >> beam.Create([])
            for name in ("Events", "Audit", "Duplicates", "Conflicts", "DeadLetters")
        ]
        rows = CoreOutputs(
            events=nothing[0],
            duplicates=nothing[2],
            metrics=metrics,
            audit=(nothing[1],),
            dead_letters=nothing[4],
            usage=usage,
            metric_dead_letters=core.metric_dead_letters,
            conflicts=nothing[3],
        )
        return rows, write_outputs(rows, self._options, archive=False)


def _merged(first: SinkOutputs, second: SinkOutputs) -> SinkOutputs:
    """The sink outputs of the core's write and the metrics' write, as one run's."""

    def both(name: str, a, b):
        present = [p for p in (a, b) if p is not None]
        if len(present) < 2:
            return present[0] if present else None
        return present | f"Merge{name}" >> beam.Flatten()

    return SinkOutputs(
        first.raw_files,
        both("DeadLetterFiles", first.dead_letter_files, second.dead_letter_files),
        both("SinkDeadLetters", first.sink_dead_letters, second.sink_dead_letters),
        both("Freshness", first.freshness, second.freshness),
    )


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
            combine_copies=_combine_copies(pipeline),
        )
        # The core's own panes count this run's events only: they are written for the days
        # whose archive is this run's alone, the other days' rows are recomputed (ADR 0014).
        sinks = write_outputs(core, options, metrics=False)
        rows, written = sinks.raw_files | "RecomputeTouchedMetrics" >> RecomputeTouchedMetrics(
            options, config, core, sinks.sink_dead_letters
        )
        core = core._replace(metrics=rows.metrics, usage=rows.usage)
        return PipelineOutputs(raw, core, _merged(sinks, written))
    raw = _read_archive(pipeline, options)
    core = raw | "AnalyzeEvents" >> AnalyzeEvents(config, input_format="redacted")
    if options.regions:
        # usage_hourly rows are per user, model and hour across regions: a reconciliation of
        # some regions would replace them with partial sums, so it leaves them as they are.
        core = core._replace(usage=pipeline | "NoUsage" >> beam.Create([]))
    return PipelineOutputs(raw, core, write_outputs(core, options, archive=False))


def _combine_copies(pipeline: beam.Pipeline):
    """How the first pass combines its candidates per shard: on Dataflow, ``CombinePerKey``
    (None) through Dataflow's shuffle; on the local runner, whose shuffle is its main process's
    memory, through local files (``pipelines.local.spill``), so memory does not grow with the
    number of event ids."""
    if on_dataflow(pipeline.options):
        return None
    from pipelines.local.spill import CombinePerKeyOnDisk

    return CombinePerKeyOnDisk


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
