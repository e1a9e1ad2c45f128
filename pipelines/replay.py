"""Dead-letter replay: re-submit stored dead letters through the core transform, then reconcile.

Bounded. Reads the dead letters under ``{output_root}/dead_letter/dt=D/`` for the failure dates
D from ``--start_date`` to ``--end_date`` whose reason starts with ``--reason``, and runs their
redacted payloads through ``AnalyzeEvents`` (``transforms.replay.ReplayDeadLetters`` says what
happens to each record). Then, unless ``--skip_reconcile``, it runs the reconciliation backfill
(``pipelines.backfill``, archive replay) over the days (every region) the replay archived events
in, so the metrics count them exactly.

    python -m pipelines.replay --output_root ./out --start_date 2026-11-01 \\
        --end_date 2026-11-07 --reason event_time_in_future --max_clock_skew_s 7200

Writes through the same sinks as the other pipelines (``--sink``: the embedded ones under
``--output_root``, or Google Cloud): the replayed events to the raw archive, the records that
failed for a new reason to the dead letters, the audit records (``replayed`` per record
re-submitted, plus the outcome of each submission) to the audit log; the run totals go to
``<output_root>/runs/<run_id>.json``. It reads the dead letters where the sinks write them
(``--output_root``, or ``--dead_letter_root`` with ``--sink gcp``). A command of local runs (it
reports and reconciles when the replay has finished), whatever the sinks. Every sink is
idempotent, so running it again changes nothing. The core flags (``--redaction_engine``,
``--max_clock_skew_s``, ``--price_table``, ...) apply to the replay as to any run: a fix that
is a flag (a wider clock skew) is given here.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from collections.abc import Mapping
from typing import NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import backfill
from pipelines.clock import add_now_option, now_problems, reference_now
from pipelines.io.sources.archive import ReadArchivedEvents
from pipelines.io.sources.avro import ReadAvroRecords, dead_letter_patterns
from pipelines.launch import configure_logging, fail, launch, on_dataflow, parse_options
from pipelines.local.runner import LocalRunner
from pipelines.local.summary import new_run_id
from pipelines.local.tally import TallyOutcomes, read_tally
from pipelines.options import (
    add_core_options,
    add_date_range_options,
    core_config,
    date_range,
    parse_date,
    validate_core,
)
from pipelines.sinks import add_sink_options, gcp_config, validate_sinks, write_outputs
from transforms.elements import DeadLetter, EventBatch
from transforms.replay import ReplayDeadLetters, ReplayOutputs

__all__ = ["ReplayOptions", "ReplayReport", "build", "replay_report", "run", "validate"]

_LOGGER = logging.getLogger(__name__)
_ARCHIVED = re.compile(r"replay\.archived\.event_date=(\d{4}-\d{2}-\d{2})/region=(.+)")


class ReplayOptions(PipelineOptions):
    """Flags of the dead-letter replay (core flags come from ``add_core_options``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_core_options(parser)
        add_sink_options(parser)
        add_date_range_options(parser)
        add_now_option(parser)
        parser.add_argument(
            "--reason",
            help="Dead-letter reason to replay, or a prefix of reasons (missing_field: for "
            "every missing field, redaction_failed for every engine failure). Required.",
        )
        parser.add_argument(
            "--skip_reconcile",
            action="store_true",
            default=False,
            help="Do not reconcile the metrics of the days the replay archived events in.",
        )


def validate(options: ReplayOptions) -> list[str]:
    problems = validate_core(options) + validate_sinks(options)
    start = parse_date(options.start_date, "start_date", problems)
    end = parse_date(options.end_date, "end_date", problems)
    if options.start_date is None or options.end_date is None:
        problems.append("--start_date and --end_date are required (dead-letter failure dates)")
    if start and end and end < start:
        problems.append("--end_date is before --start_date")
    if not options.reason:
        problems.append("--reason is required (a dead-letter reason or a prefix of reasons)")
    problems += now_problems(options.now)
    if "://" in (options.output_root or ""):
        problems.append("--output_root must be a local directory (the run totals)")
    if (
        not options.skip_reconcile
        and options.window_size_s > 0
        and backfill.SECONDS_PER_DAY % options.window_size_s
    ):
        problems.append("--window_size_s must divide a day (86400 s) to reconcile by date")
    return problems


def _dead_letter(record: dict) -> DeadLetter:
    return DeadLetter(**record)


def _counts(outputs: ReplayOutputs) -> beam.PCollection:
    """What the report needs beyond the core's totals, as (name, n) pairs."""
    return (
        outputs.replayed | "CountReplayed" >> beam.Map(lambda d: ("replay.replayed", 1)),
        outputs.not_replayable
        | "CountNotReplayable" >> beam.Map(lambda d: (f"replay.not_replayable.{d.reason}", 1)),
        outputs.failed_again
        | "CountFailedAgain" >> beam.Map(lambda d: (f"replay.failed_again.{d.reason}", 1)),
        outputs.dead_letters | "CountNew" >> beam.Map(lambda d: ("replay.new_dead_letters", 1)),
        outputs.events | "CountArchived" >> beam.FlatMap(_archived_counts),
    ) | "FlattenCounts" >> beam.Flatten()


def _archived_counts(batch: EventBatch) -> list[tuple[str, int]]:
    return [
        (f"replay.archived.event_date={e.event_date.isoformat()}/region={e.region}", 1)
        for e in batch.events
    ]


def _dead_letter_root(options: ReplayOptions) -> str:
    return gcp_config(options).dead_letter_root if options.sink == "gcp" else options.output_root


def _archive_root(options: ReplayOptions) -> str:
    return gcp_config(options).raw_root if options.sink == "gcp" else options.output_root


def build(pipeline: beam.Pipeline, options: ReplayOptions) -> ReplayOutputs:
    """Wires the replay: reads the dead letters, replays them, writes through the sinks and
    counts the run (``runs/<run_id>.json``, which the report reads)."""
    start = parse_date(options.start_date, "start_date", [])
    end = parse_date(options.end_date, "end_date", [])
    patterns = dead_letter_patterns(_dead_letter_root(options), date_range(start, end))
    dead_letters = (
        pipeline
        | "Partitions" >> beam.Create(patterns)
        | "ReadDeadLetters" >> ReadAvroRecords("dead_letter")
        | "ToDeadLetters" >> beam.Map(_dead_letter).with_output_types(DeadLetter)
    )
    # First archived wins: a replayed event another input archived already is a duplicate.
    outputs = dead_letters | "ReplayDeadLetters" >> ReplayDeadLetters(
        core_config(options)._replace(now=options.now),
        options.reason,
        read_archived=ReadArchivedEvents(_archive_root(options)),
    )
    sinks = write_outputs(outputs.core(pipeline), options, metrics=False)
    tally = {"read": outputs.submitted, "audit": outputs.outcomes, "counts": _counts(outputs)}
    if sinks.sink_dead_letters is not None:
        tally["sink_dead_letters"] = sinks.sink_dead_letters
    _ = tally | "TallyOutcomes" >> TallyOutcomes(options.output_root, options.run_id or "latest")
    return outputs


class ReplayReport(NamedTuple):
    """What a replay did, from its run totals."""

    replayed: int  # replayable records selected (distinct ids)
    not_replayable: dict[str, int]  # records without a payload, per reason
    submitted: int  # payloads submitted (one per original input)
    written: int
    duplicates: int
    conflicts: int  # duplicate_conflict: the event id archived already, with other content
    failed_again: dict[str, int]  # per new reason
    new_dead_letters: int  # failed again for a new reason: stored as new records
    archived: dict[tuple[str, str], int]  # (event_date, region) -> events archived

    @property
    def balanced(self) -> bool:
        return self.submitted == (
            self.written + self.duplicates + self.conflicts + sum(self.failed_again.values())
        )


def replay_report(totals: Mapping[str, int]) -> ReplayReport:
    """The report of a replay from its run totals (``runs/<run_id>.json``)."""

    def by_suffix(prefix: str) -> dict[str, int]:
        return {
            k.removeprefix(prefix): n for k, n in sorted(totals.items()) if k.startswith(prefix)
        }

    archived = {}
    for name, n in totals.items():
        match = _ARCHIVED.fullmatch(name)
        if match:
            archived[(match.group(1), match.group(2))] = n
    return ReplayReport(
        replayed=totals.get("replay.replayed", 0),
        not_replayable=by_suffix("replay.not_replayable."),
        submitted=totals.get("read", 0),
        written=totals.get("outcome.written", 0),
        duplicates=totals.get("outcome.duplicate", 0),
        conflicts=totals.get("outcome.duplicate_conflict", 0),
        failed_again=by_suffix("replay.failed_again."),
        new_dead_letters=totals.get("replay.new_dead_letters", 0),
        archived=dict(sorted(archived.items())),
    )


def print_report(report: ReplayReport) -> None:
    """Prints the report for a person (stdout)."""
    r = report
    lines = [
        "",
        "=== dead-letter replay ===",
        f"records replayed         {r.replayed:>8}   (payload stored, distinct ids)",
        f"not replayable           {sum(r.not_replayable.values()):>8}   (payload omitted)",
    ]
    lines += [f"    {reason:<32} {n:>6}" for reason, n in r.not_replayable.items()]
    check = "OK" if r.balanced else "MISMATCH"
    lines += [
        f"payloads submitted       {r.submitted:>8}   (one per original input)",
        f"  written                {r.written:>8}",
        f"  duplicates             {r.duplicates:>8}",
        f"  conflicts              {r.conflicts:>8}   (event id archived with other content)",
        f"  failed again           {sum(r.failed_again.values()):>8}   "
        f"({r.new_dead_letters} for a new reason, stored as new dead letters)",
    ]
    lines += [f"    {reason:<32} {n:>6}" for reason, n in r.failed_again.items()]
    lines += [
        f"submitted = written + duplicates + conflicts + failed again: {check}",
        "archived partitions:",
    ]
    lines += [f"    event_date={d}/region={g}  {n}" for (d, g), n in r.archived.items()] or [
        "    (none)"
    ]
    print("\n".join(lines), flush=True)


def _reconcile(options: PipelineOptions, replay: ReplayOptions, report: ReplayReport) -> int:
    """Runs the reconciliation backfill over the days the replay archived into, every region
    (usage rows are per user across regions: a partial reconciliation would leave them out)."""
    dates = sorted({d for d, _ in report.archived})
    view = options.view_as(backfill.BackfillOptions)
    view.input = _archive_root(replay)
    view.input_format = "avro"
    view.now = ""  # the archive is not re-checked
    view.start_date, view.end_date = dates[0], dates[-1]
    view.regions = ""
    view.run_id = f"{replay.run_id}-reconcile"
    described = (
        f"reconcile after replay: event dates {dates[0]}..{dates[-1]}, every region, "
        f"output_root={view.output_root}"
    )
    return launch(options, view, backfill.validate, backfill.build, described)


def run(argv: list[str] | None = None) -> int:
    options = parse_options(argv, ReplayOptions, "python -m pipelines.replay", __doc__)
    replay = options.view_as(ReplayOptions)
    if on_dataflow(options):
        fail(
            [
                "the dead-letter replay runs on local runners (use --sink gcp to write to Google "
                "Cloud)"
            ]
        )
    problems = validate(replay)
    if problems:
        fail(problems)
    launched_at = dt.datetime.now(dt.UTC)
    replay.run_id = replay.run_id or new_run_id(launched_at)
    # The clock of the payloads' event-time checks, recorded for this selection of dead letters.
    selection = (
        f"replay:{_dead_letter_root(replay)}:{replay.start_date}..{replay.end_date}:{replay.reason}"
    )
    replay.now = reference_now(_archive_root(replay), selection, replay.now, launched_at)
    _LOGGER.info(
        "replay: dead letters %s..%s reason %s* output_root=%s engine=%s",
        replay.start_date,
        replay.end_date,
        replay.reason,
        replay.output_root,
        replay.redaction_engine,
    )
    named = options.view_as(StandardOptions).runner
    pipeline = beam.Pipeline(runner=None if named else LocalRunner(), options=options)
    build(pipeline, replay)
    pipeline.run().wait_until_finish()
    report = replay_report(read_tally(replay.output_root, replay.run_id))
    print_report(report)
    if report.archived and not replay.skip_reconcile:
        return _reconcile(options, replay, report)
    return 0


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
