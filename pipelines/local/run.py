"""Running a pipeline on this machine: ``run_locally`` (what ``pipelines.launch`` calls for
every run that is not on Dataflow).

It does what only a local run does: picks the local runner (``LocalRunner``, unless
``--runner`` names another), applies a local source and the run totals (``TallyOutcomes``) on
top of the pipeline's own graph, starts the source's event service when the run starts, runs
with the DirectRunner fixes installed for the duration of the run only, waits for the end and
prints the run summary and an example query.

Local sources: the synthetic one for ``--source synthetic``; for ``--source pubsub`` with the
embedded sinks, the local Pub/Sub source (``pipelines.local.pubsub``: streaming pull, at least
once). With ``--sink gcp``, or when ``--runner`` names a runner, the graph reads Pub/Sub as on
Dataflow, through ``ReadGatewayEvents`` (Beam's reader, which acknowledges on read): the
commit notifications the local source waits for come from the embedded sinks only.

Ctrl-C: with the local Pub/Sub source the first one (or SIGTERM) drains: the source stops
taking messages, the stream ends, every window and sink flushes and what was read is
acknowledged. Otherwise, and on a second one, it cancels the pipeline. Either way the summary
is printed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.launch import fail
from pipelines.local import direct_runner_fixes
from pipelines.local.options import (
    LocalPubsubOptions,
    SyntheticSourceOptions,
    burst_profile,
    load_profile,
    validate_local_pubsub,
    validate_synthetic,
)
from pipelines.local.pubsub import LocalPubsubSource
from pipelines.local.runner import LocalRunner
from pipelines.local.source import SyntheticSource
from pipelines.local.summary import new_run_id, print_example_query, print_summary, summarize
from pipelines.local.tally import TallyOutcomes, tally_inputs
from pipelines.sinks import output_lines

__all__ = ["build_locally", "local_pubsub_source", "run_locally", "synthetic_source"]

LocalSource = SyntheticSource | LocalPubsubSource

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
        bursts=burst_profile(synthetic),
    )


def local_pubsub_source(options: PipelineOptions, subscription: str) -> LocalPubsubSource:
    """The local Pub/Sub source the flags describe (stops the command if they are wrong)."""
    flags = options.view_as(LocalPubsubOptions)
    problems = validate_local_pubsub(flags)
    if problems:
        fail(problems)
    return LocalPubsubSource(
        subscription,
        max_outstanding=flags.pubsub_max_outstanding,
        max_outstanding_mb=flags.pubsub_max_outstanding_mb,
        max_lease_s=flags.pubsub_max_lease_s,
    )


def _reads_pubsub_locally(options: PipelineOptions, view) -> bool:
    return (
        getattr(view, "source", None) == "pubsub"
        and getattr(view, "sink", None) == "embedded"
        and not options.view_as(StandardOptions).runner
    )


def build_locally(
    pipeline: beam.Pipeline, options: PipelineOptions, view, build: Callable[..., object]
) -> tuple[object, LocalSource | None]:
    """Builds the pipeline with its local-only steps: a local source when the view asks for
    one (``--source synthetic``; ``--source pubsub`` with the embedded sinks and no named
    runner), and the run totals. Returns the pipeline's outputs and the local source (None
    without one), whose service the caller starts when it runs."""
    source: LocalSource | None = None
    if getattr(view, "source", None) == "synthetic":
        source = synthetic_source(options)
        events = pipeline | "GenerateEvents" >> source.transform()
        outputs = build(pipeline, view, events=events)
    elif _reads_pubsub_locally(options, view):
        source = local_pubsub_source(options, view.subscription)
        events = pipeline | "PullGatewayEvents" >> source.transform()
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
            cancelled = _wait(result, source)
        finally:
            if source is not None:
                source.stop()
    print_summary(summarize(view.output_root, view.run_id, started_at), output_lines(view))
    if isinstance(source, LocalPubsubSource):
        print(source.report(), flush=True)
    if cancelled:
        print(
            "(cancelled: the totals are those of the last periodic write, every 10 s; windows "
            "still open when it was cancelled never emitted, so late-dropped counts their "
            "events too)",
            flush=True,
        )
    print_example_query(view.output_root)
    return 0


def _wait(result, source: LocalSource | None) -> bool:
    """Waits for the end of the run; returns whether it was cancelled (Ctrl-C)."""
    with _drain_on_signal(source):
        try:
            result.wait_until_finish()
            return False
        except KeyboardInterrupt:
            # Beam's DirectRunner stops its executor when wait_until_finish is interrupted.
            _LOGGER.info("interrupted: cancelling the pipeline")
            result.cancel()
            return True


@contextlib.contextmanager
def _drain_on_signal(source: LocalSource | None) -> Iterator[None]:
    """With the local Pub/Sub source, the first SIGINT (Ctrl-C) or SIGTERM drains it: it
    stops taking messages and ends the stream, so the run ends by itself once every window and
    sink has flushed. A second one interrupts (``KeyboardInterrupt``: cancel). A handler rather
    than catching the interrupt: the DirectRunner stops its executor when ``wait_until_finish``
    is interrupted, so a drain must not interrupt it."""
    if not isinstance(source, LocalPubsubSource) or (
        threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    draining = False

    def handler(signum, frame):
        nonlocal draining
        if draining:
            raise KeyboardInterrupt
        draining = True
        _LOGGER.info("%s: draining (once more cancels)", signal.Signals(signum).name)
        source.drain()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
