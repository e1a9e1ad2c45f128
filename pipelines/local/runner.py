"""The local runner: Beam's Python runners, chosen explicitly, never Prism.

Beam 2.77's default runner (``DirectRunner``, an alias of ``SwitchingDirectRunner``) first tries
the Prism runner, a Go binary it downloads from github.com, and falls back to its Python runners
only when that fails, so one command would run on Prism on a laptop and on the Python runners in
CI (no route to GitHub). Every test and figure of this project is of the Python runners, so local
runs name them: ``LocalRunner`` picks Beam's ``BundleBasedDirectRunner`` for streaming pipelines
(and wherever a pipeline holds a ``TestStream``, a Pub/Sub read or a processing-time timer, which
the ``FnApiRunner`` does not run), and the ``FnApiRunner`` otherwise (``--direct_num_workers``
and ``--direct_running_mode`` apply). That is the choice ``SwitchingDirectRunner`` makes after
its Prism attempt, made through public classes and no module attribute of Beam's is replaced.

Use it as ``--runner pipelines.local.runner.LocalRunner`` (Beam resolves a dotted class name),
``beam.Pipeline(runner=LocalRunner())`` or ``TestPipeline(runner=LocalRunner())``; the pipelines'
``launch`` uses it for every run that is not on Dataflow and names no other runner. Local only:
nothing on the Dataflow path imports this package (a test checks it).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub, WriteToPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.runner import PipelineRunner
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CombineValuesDoFn
from apache_beam.transforms.timeutil import TimeDomain

__all__ = ["LOCAL_RUNNER", "LocalRunner", "needs_bundle_based_runner"]

LOCAL_RUNNER = "pipelines.local.runner.LocalRunner"


class _NeedsBundleBased(PipelineVisitor):
    """Finds what the ``FnApiRunner`` cannot run: unbounded sources and processing-time timers
    (the rules of Beam's ``SwitchingDirectRunner``)."""

    def __init__(self) -> None:
        self.found = False

    def enter_composite_transform(self, applied) -> None:
        if isinstance(applied.transform, ReadFromPubSub | WriteToPubSub):
            self.found = True

    def visit_transform(self, applied) -> None:
        transform = applied.transform
        if isinstance(transform, TestStream | ReadFromPubSub | WriteToPubSub):
            self.found = True
        if isinstance(transform, beam.ParDo):
            dofn = transform.dofn
            if userstate.is_stateful_dofn(dofn):
                _, timers = userstate.get_dofn_specs(dofn)
                if any(timer.time_domain == TimeDomain.REAL_TIME for timer in timers):
                    self.found = True
            if isinstance(dofn, CombineValuesDoFn) and transform.side_inputs:
                self.found = True


def needs_bundle_based_runner(pipeline: beam.Pipeline, options: PipelineOptions) -> bool:
    """Whether ``pipeline`` must run on the ``BundleBasedDirectRunner``: a streaming pipeline,
    or one holding what the ``FnApiRunner`` does not run."""
    if options.view_as(StandardOptions).streaming:
        return True
    visitor = _NeedsBundleBased()
    pipeline.visit(visitor)
    return visitor.found


def _fn_api_runner(options: PipelineOptions) -> PipelineRunner:
    # As SwitchingDirectRunner builds it: the pipeline options travel to the worker processes
    # of --direct_running_mode multi_processing in the provision info.
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=provision)


class LocalRunner(PipelineRunner):
    """Runs a pipeline in this process on Beam's Python runners (see the module docstring)."""

    def is_fnapi_compatible(self) -> bool:
        # As SwitchingDirectRunner: the pipeline goes through its portable form before running.
        return BundleBasedDirectRunner.is_fnapi_compatible()

    def run_pipeline(self, pipeline, options):
        if needs_bundle_based_runner(pipeline, options):
            return BundleBasedDirectRunner().run_pipeline(pipeline, options)
        return _fn_api_runner(options).run_pipeline(pipeline, options)
