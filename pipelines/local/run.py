"""Running a pipeline on this machine: ``run_locally`` (what ``pipelines.launch`` calls for
every run that is not on Dataflow).

It does what only a local run does: picks the local runner (``LocalRunner``, unless
``--runner`` names another), applies the synthetic source when ``--source synthetic`` and the
run totals (``TallyOutcomes``) on top of the pipeline's own graph, starts the synthetic event
service when the run starts, runs with the DirectRunner fixes installed for the duration of
the run only, waits for the end (Ctrl-C cancels the pipeline and still prints the summary) and
prints the run summary and an example query.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.launch import fail
from pipelines.local import direct_runner_fixes
from pipelines.local.options import SyntheticSourceOptions, load_profile, validate_synthetic
from pipelines.local.runner import LocalRunner
from pipelines.local.source import SyntheticSource
from pipelines.local.summary import new_run_id, print_example_query, print_summary, summarize
from pipelines.local.tally import TallyOutcomes, tally_inputs
from pipelines.sinks import output_lines

__all__ = ["build_locally", "run_locally", "synthetic_source"]

_LOGGER = logging.getLogger(__name__)


def synthetic_source(options: PipelineOptions) -> SyntheticSource:
    """The synthetic source the flags describe (stops the command if they are wrong)."""
    synthetic = options.view_as(SyntheticSourceOptions)
    problems = validate_synthetic(synthetic)
    if problems:
        fail(problems)
    return SyntheticSource(
        synthetic.rate,
        synthetic.duration_s,
        seed=synthetic.seed,
        profile=load_profile(synthetic),
        tick_s=synthetic.tick_s,
    )


def build_locally(
    pipeline: beam.Pipeline, options: PipelineOptions, view, build: Callable[..., object]
) -> tuple[object, SyntheticSource | None]:
    """Builds the pipeline with its local-only steps: the synthetic source when the view asks
    for it (``--source synthetic``), and the run totals. Returns the pipeline's outputs and the
    synthetic source (None without one), whose service the caller starts when it runs."""
    source = None
    if getattr(view, "source", None) == "synthetic":
        source = synthetic_source(options)
        events = pipeline | "GenerateEvents" >> source.transform()
        outputs = build(pipeline, view, events=events)
    else:
        outputs = build(pipeline, view)
    _ = tally_inputs(outputs) | "TallyOutcomes" >> TallyOutcomes(
        view.output_root, view.run_id or "latest"
    )
    return outputs, source


def run_locally(options: PipelineOptions, view, build: Callable[..., object]) -> int:
    """Runs the pipeline ``build`` wires on this machine to its end; returns the exit code."""
    started_at = dt.datetime.now(dt.UTC)
    view.run_id = view.run_id or new_run_id(started_at)
    named = options.view_as(StandardOptions).runner
    pipeline = beam.Pipeline(runner=None if named else LocalRunner(), options=options)
    _, source = build_locally(pipeline, options, view, build)
    cancelled = False
    with direct_runner_fixes.installed():
        if source is not None:
            source.start()
        try:
            result = pipeline.run()
            try:
                result.wait_until_finish()
            except KeyboardInterrupt:
                _LOGGER.info("interrupted: cancelling the pipeline")
                result.cancel()
                cancelled = True
        finally:
            if source is not None:
                source.stop()
    print_summary(summarize(view.output_root, view.run_id, started_at), output_lines(view))
    if cancelled:
        print(
            "(cancelled: the totals are those of the last periodic write, every 10 s; windows "
            "still open when it was cancelled never emitted, so late-dropped counts their "
            "events too)",
            flush=True,
        )
    print_example_query(view.output_root)
    return 0
