"""Local runs use Beam's Python runners, never the Prism runner Beam would download."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability import prism_runner
from apache_beam.runners.runner import create_runner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.local_runner import (
    PythonDirectRunner,
    install_python_direct_runner,
    uninstall_python_direct_runner,
)

BEAMS_PRISM_RUNNER = prism_runner.PrismRunner


@pytest.fixture
def prism_attempts(monkeypatch):
    """Records every run Beam hands to the real PrismRunner, which then fails as it does
    offline (Beam falls back to its Python runners)."""
    attempts = []

    def run_pipeline(self, pipeline, options):
        attempts.append(pipeline)
        raise RuntimeError("no Prism binary in the tests")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", run_pipeline)
    return attempts


def _run_batch(options: list[str] | None = None) -> None:
    with beam.Pipeline(options=PipelineOptions(options or [])) as pipeline:
        doubled = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: 2 * x)
        assert_that(doubled, equal_to([2, 4, 6]))


def test_the_default_runner_of_a_local_run_never_tries_prism(prism_attempts):
    assert install_python_direct_runner()
    assert create_runner("DirectRunner").__class__ is PythonDirectRunner

    _run_batch()
    _run_batch(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])

    assert prism_attempts == []
    assert prism_runner.PrismRunner is BEAMS_PRISM_RUNNER  # put back after each run


def test_beams_own_direct_runner_tries_prism_first(prism_attempts):
    # What the shim is for: without it, a machine that can reach GitHub runs Prism.
    uninstall_python_direct_runner()
    try:
        _run_batch()
    finally:
        install_python_direct_runner()
    assert len(prism_attempts) == 1


def test_an_explicit_prism_runner_is_left_alone():
    _run_batch()  # a local run swaps Prism out while it picks a runner, and puts it back
    assert isinstance(create_runner("PrismRunner"), BEAMS_PRISM_RUNNER)


def test_it_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GENAI_ALLOW_PRISM", "1")
    uninstall_python_direct_runner()
    try:
        assert not install_python_direct_runner()
        assert create_runner("DirectRunner").__class__ is direct_runner.SwitchingDirectRunner
    finally:
        monkeypatch.delenv("GENAI_ALLOW_PRISM")
        install_python_direct_runner()
