"""The ``run()`` both pipelines share: validate, build, run to the end, summarise."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.direct_runner import install_spec_cache, install_state_pruning
from pipelines.local_runner import install_python_direct_runner
from pipelines.summary import new_run_id, print_example_query, print_summary, summarize

__all__ = ["configure_logging", "launch"]

_LOGGER = logging.getLogger(__name__)


def configure_logging() -> None:
    """INFO for this project's loggers, WARNING for the rest (Beam is chatty at INFO)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("pipelines", "transforms", "schemas"):
        logging.getLogger(name).setLevel(logging.INFO)


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
    runner = options.view_as(StandardOptions).runner or ""
    on_dataflow = str(runner).lower().removesuffix("runner") == "dataflow"
    if not on_dataflow:
        install_python_direct_runner()  # a local runner: see pipelines.local_runner
        install_spec_cache()  # and pipelines.direct_runner
        install_state_pruning()
    pipeline = beam.Pipeline(options=options)
    build(pipeline, view)
    result = pipeline.run()
    if on_dataflow:
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
