"""The ``run()`` both pipelines share: validate, build, run to the end, summarise."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.local.direct_runner_fixes import install_spec_cache, install_state_pruning
from pipelines.local.summary import new_run_id, print_example_query, print_summary, summarize
from pipelines.local_runner import install_python_direct_runner

__all__ = [
    "WORKER_LOGGER",
    "configure_logging",
    "launch",
    "on_dataflow",
    "parse_options",
    "unknown_flags",
]

_LOGGER = logging.getLogger(__name__)


# Where the local runner relays its worker processes' log lines ("Worker: ..."), and the two
# warnings every worker of a multi-process run logs at start: it is handed every flag but knows
# only Beam's (the pipeline's own were checked at launch, see parse_options, and its DoFns carry
# their settings), and a local worker has no semi-persistent directory. Both are dropped.
WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
_WORKER_START_NOISE = ("Discarding unparseable args", "No semi_persistent_directory found")


class _DropWorkerStartNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _WORKER_START_NOISE)


def configure_logging() -> None:
    """INFO for this project's loggers, WARNING for the rest (Beam is chatty at INFO), without
    the start-up warnings of local worker processes."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("pipelines", "transforms", "schemas"):
        logging.getLogger(name).setLevel(logging.INFO)
    worker_logger = logging.getLogger(WORKER_LOGGER)
    if not any(isinstance(f, _DropWorkerStartNoise) for f in worker_logger.filters):
        worker_logger.addFilter(_DropWorkerStartNoise())


def parse_options(
    argv: list[str] | None, options_class: type[PipelineOptions], command: str, description: str
) -> PipelineOptions:
    """The pipeline options of ``argv`` (default ``sys.argv[1:]``).

    ``-h``/``--help`` prints the flags of ``options_class`` under ``description`` (as the help
    of ``command``, ``python -m pipelines.backfill``) and exits:
    Beam's own parser would print an empty usage. An unknown flag stops the command with a
    clear error: Beam only warns about it and runs on without it, so a mistyped flag
    (``--dedupe_ttl`` for ``--dedupe_ttl_s``) would silently leave its setting at the default.
    On Dataflow an unknown flag is logged as a warning instead: the Flex Template launcher's
    flags are not under this project's control, and the service itself rejects a template
    parameter its metadata does not declare.
    """
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        parser = argparse.ArgumentParser(
            prog=command,
            usage="%(prog)s [--flag value ...]",
            description=description,
            epilog="Beam's own flags (--runner, --direct_num_workers, Dataflow's --project, "
            "--region, --temp_location and the rest) are accepted as well.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        options_class._add_argparse_args(parser)
        parser.print_help()
        raise SystemExit(0)
    options = PipelineOptions(args)
    unknown = unknown_flags(options)
    if unknown and on_dataflow(options):
        _LOGGER.warning("flags no options class defines, ignored: %s", " ".join(unknown))
    elif unknown:
        raise SystemExit(
            "invalid options:\n  "
            + "\n  ".join(f"unknown flag {flag} (see --help)" for flag in unknown)
        )
    return options


def on_dataflow(options: PipelineOptions) -> bool:
    """Whether ``options`` run the pipeline on Dataflow (``--runner DataflowRunner``)."""
    runner = options.view_as(StandardOptions).runner or ""
    return str(runner).lower().removesuffix("runner") == "dataflow"


def unknown_flags(options: PipelineOptions) -> list[str]:
    """The flags of ``options`` that no ``PipelineOptions`` class defines, sorted."""
    known = options.get_all_options(retain_unknown_options=False)
    given = options.get_all_options(retain_unknown_options=True)
    return sorted(f"--{name}" for name in given.keys() - known.keys())


def launch(
    options: PipelineOptions,
    view,
    problems: list[str],
    build: Callable[[beam.Pipeline, object], dict],
    described: str,
    outputs: list[str] | None = None,
) -> int:
    """Runs a pipeline whose flags are ``view`` (a view of ``options``) to the end.

    Stops with the list of ``problems`` if there are any; otherwise logs ``described`` (flags,
    never secrets), builds with ``build``, waits for the pipeline to finish and prints the run
    summary (listing ``outputs``, default the embedded layout) and an example query. On Dataflow
    it returns once the job is submitted (a streaming job runs until drained or cancelled).
    Locally, Ctrl-C cancels the pipeline (the way to stop an unbounded source such as Pub/Sub)
    and still prints the summary of what was processed. Returns the process exit code.
    """
    if problems:
        raise SystemExit("invalid options:\n  " + "\n  ".join(problems))
    _LOGGER.info("%s", described)
    started_at = dt.datetime.now(dt.UTC)
    view.run_id = view.run_id or new_run_id(started_at)
    dataflow = on_dataflow(options)
    if not dataflow:
        install_python_direct_runner()  # a local runner: see pipelines.local_runner
        install_spec_cache()  # and pipelines.local.direct_runner_fixes
        install_state_pruning()
    pipeline = beam.Pipeline(options=options)
    build(pipeline, view)
    result = pipeline.run()
    if dataflow:
        _LOGGER.info("submitted to Dataflow: job %s", getattr(result, "job_id", lambda: "?")())
        return 0
    cancelled = False
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        _LOGGER.info("interrupted: cancelling the pipeline")
        result.cancel()
        cancelled = True
    print_summary(summarize(view.output_root, view.run_id, started_at), outputs)
    if cancelled:
        print(
            "(cancelled: the totals are those of the last periodic write, every 10 s; windows "
            "still open when it was cancelled never emitted, so late-dropped counts their "
            "events too)",
            flush=True,
        )
    print_example_query(view.output_root)
    return 0
