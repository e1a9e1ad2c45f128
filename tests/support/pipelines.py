"""Test pipelines on the project's local runner.

``TestPipeline`` is Beam's, with ``pipelines.local.runner.LocalRunner`` as its runner unless a
test names another: every pipeline of the tests runs on Beam's Python runners (the
``BundleBasedDirectRunner`` for streaming and TestStream pipelines, the ``FnApiRunner``
otherwise), never on Prism, chosen explicitly and without replacing anything of Beam's.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline

from pipelines.local.runner import LocalRunner

__all__ = [
    "TestPipeline",
    "local_pipeline",
    "streaming_options",
    "streaming_pipeline",
    "usage_error",
]


class TestPipeline(test_pipeline.TestPipeline):
    __test__ = False  # not a test class

    def __init__(self, runner=None, *args, **kwargs):
        super().__init__(runner or LocalRunner(), *args, **kwargs)


def local_pipeline(options=None) -> beam.Pipeline:
    """A ``beam.Pipeline`` on the local runner."""
    return beam.Pipeline(runner=LocalRunner(), options=options)


def streaming_options() -> PipelineOptions:
    """Options of a streaming (unbounded) pipeline."""
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    return options


def streaming_pipeline() -> TestPipeline:
    """A streaming ``TestPipeline`` on the ``BundleBasedDirectRunner`` (stateful DoFns, timers
    and TestStream, as the local runner runs streaming pipelines)."""
    return TestPipeline(runner="BundleBasedDirectRunner", options=streaming_options())


def usage_error(command, args: list[str], capsys) -> str:
    """Runs ``command(args)``, which must stop with a usage error: exit code 2 and one line,
    ``invalid options: ...``, on stderr. Returns that line."""
    import pytest

    with pytest.raises(SystemExit) as caught:
        command(args)
    assert caught.value.code == 2, caught.value.code
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("invalid options: "), line
    return line
