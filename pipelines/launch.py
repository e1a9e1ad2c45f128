"""What every pipeline command shares: flags, logging, and ``launch`` (validate, build, run).

On Dataflow ``launch`` builds the graph and submits it; that path imports nothing of
``pipelines.local``. Every other run goes to ``pipelines.local.run`` (imported then, and only
then), which picks the local runner, adds the local-only steps (the synthetic source, the run
totals) and prints the run summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from transforms.pii import logs as log_hygiene

__all__ = [
    "WORKER_LOGGER",
    "configure_logging",
    "fail",
    "launch",
    "local_only_problems",
    "on_dataflow",
    "parse_options",
    "unknown_flags",
]

_LOGGER = logging.getLogger(__name__)

# Exit code of a command whose flags or environment are wrong (nothing was processed).
USAGE_ERROR = 2

# Where the local runner relays its worker processes' log lines ("Worker: ..."), and the two
# warnings every worker of a multi-process run logs at start: it is handed every flag but knows
# only Beam's (the pipeline's own were checked at launch, see parse_options, and its DoFns carry
# their settings), and a local worker has no semi-persistent directory. Both are dropped.
WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
_WORKER_START_NOISE = ("Discarding unparseable args", "No semi_persistent_directory found")

# Modules whose options classes define the local-only flags (the synthetic source's): known to
# the flag parser on local runs only, so they are in no Dataflow job and no template metadata.
_LOCAL_OPTIONS = "pipelines.local.options"


class _DropWorkerStartNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _WORKER_START_NOISE)


def configure_logging() -> None:
    """INFO for this project's loggers, WARNING for the rest (Beam is chatty at INFO), without
    the start-up warnings of local worker processes, and no field value in any record at any
    level (``transforms.pii.logs``)."""
    log_hygiene.install()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("pipelines", "transforms", "schemas"):
        logging.getLogger(name).setLevel(logging.INFO)
    worker_logger = logging.getLogger(WORKER_LOGGER)
    if not any(isinstance(f, _DropWorkerStartNoise) for f in worker_logger.filters):
        worker_logger.addFilter(_DropWorkerStartNoise())


def fail(problems: list[str]) -> None:
    """Stops the command: ``invalid options: <problem>; <problem>`` on one line, exit code 2."""
    print(f"invalid options: {'; '.join(problems)}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_ERROR)


def _runner_of(args: list[str]) -> str:
    options = PipelineOptions([a for a in args if a not in ("-h", "--help")])
    return str(options.view_as(StandardOptions).runner or "")


def _is_dataflow(runner: object) -> bool:
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    return name.lower().removesuffix("runner") == "dataflow"


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
    parameter its metadata does not declare. The local-only flags are known on local runs only.
    """
    args = sys.argv[1:] if argv is None else argv
    local = not _is_dataflow(_runner_of(args))
    local_classes: list[type[PipelineOptions]] = []
    if local:
        import importlib

        local_classes = importlib.import_module(_LOCAL_OPTIONS).LOCAL_OPTIONS.get(command, [])
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
        for local_class in local_classes:
            group = parser.add_argument_group(f"local runs only ({local_class.__name__})")
            local_class._add_argparse_args(group)
        parser.print_help()
        raise SystemExit(0)
    options = PipelineOptions(args)
    unknown = unknown_flags(options)
    if unknown and not local:
        _LOGGER.warning("flags no options class defines, ignored: %s", " ".join(unknown))
    elif unknown:
        fail([f"unknown flag {flag} (see --help)" for flag in unknown])
    return options


def on_dataflow(options: PipelineOptions) -> bool:
    """Whether ``options`` run the pipeline on Dataflow (``--runner DataflowRunner``)."""
    return _is_dataflow(options.view_as(StandardOptions).runner)


def unknown_flags(options: PipelineOptions) -> list[str]:
    """The flags of ``options`` that no ``PipelineOptions`` class defines, sorted."""
    known = options.get_all_options(retain_unknown_options=False)
    given = options.get_all_options(retain_unknown_options=True)
    return sorted(f"--{name}" for name in given.keys() - known.keys())


def local_only_problems(options: PipelineOptions, view) -> list[str]:
    """What a Dataflow run must not use: the synthetic source, the embedded sinks, local
    output roots. Empty for local runs."""
    if not on_dataflow(options):
        return []
    from pipelines.sinks import dataflow_problems

    problems = []
    if getattr(view, "source", None) == "synthetic":
        problems.append("--source synthetic runs on local runners only: use --source pubsub")
    return problems + dataflow_problems(view)


def launch(
    options: PipelineOptions,
    view,
    validate: Callable[[object], list[str]],
    build: Callable[..., object],
    described: str,
) -> int:
    """Runs a pipeline whose flags are ``view`` (a view of ``options``); returns the exit code.

    First the flags: on Dataflow what only runs locally is rejected before anything else is
    checked (so before anything contacts Google Cloud), then ``validate(view)``, then what
    they point at (``pipelines.sinks.environment_problems``: output roots that cannot be
    written, missing credentials); any problem stops the command with one line and exit code
    2, before anything is read or written. Then it logs ``described`` (flags, never
    secrets), builds with ``build(pipeline, view)`` and runs. On Dataflow it returns once the
    job is submitted (a streaming job runs until drained or cancelled). Locally it runs to the
    end and prints the run summary (``pipelines.local.run``).
    """
    problems = local_only_problems(options, view) or validate(view)
    if not problems:
        from pipelines.sinks import environment_problems

        problems = environment_problems(view)
    if problems:
        fail(problems)
    _LOGGER.info("%s", described)
    if not on_dataflow(options):
        from pipelines.local.run import run_locally

        return run_locally(options, view, build)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, view)
    result = pipeline.run()
    _LOGGER.info("submitted to Dataflow: job %s", getattr(result, "job_id", lambda: "?")())
    return 0
