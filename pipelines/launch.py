"""The ``run()`` both pipelines share: validate, build, run to the end, summarise."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

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
) -> int:
    """Runs a pipeline whose flags are ``view`` (a view of ``options``) to the end.

    Stops with the list of ``problems`` if there are any; otherwise logs ``described`` (flags,
    never secrets), builds with ``build``, waits for the pipeline to finish and prints the run
    summary and an example query. Returns the process exit code.
    """
    if problems:
        raise SystemExit("invalid options:\n  " + "\n  ".join(problems))
    _LOGGER.info("%s", described)
    started_at = dt.datetime.now(dt.UTC)
    view.run_id = view.run_id or new_run_id(started_at)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, view)
    pipeline.run().wait_until_finish()
    print_summary(summarize(view.output_root, view.run_id, started_at))
    print_example_query(view.output_root)
    return 0
