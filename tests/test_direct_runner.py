"""The DirectRunner shim caches DoFn state/timer specs without changing any answer."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

from pipelines import backfill, direct_runner, streaming
from transforms.dedupe import _DedupeShardFn

_ORIGINAL = direct_runner._ORIGINAL
COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())


@pytest.fixture(autouse=True)
def _fresh_cache():
    direct_runner.uninstall_spec_cache()
    yield
    direct_runner.uninstall_spec_cache()


def _names(specs):
    state, timers = specs
    return sorted(s.name for s in state), sorted(t.name for t in timers)


def _dofns(pipeline: beam.Pipeline) -> list[beam.DoFn]:
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.ParDo):
                found.append(node.transform.dofn)

    pipeline.visit(Visitor())
    return found


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (streaming, ["--rate", "10", "--duration_s", "1"]),
        (backfill, ["--input", __file__]),
    ],
)
def test_every_dofn_of_both_pipelines_gets_the_same_specs(module, argv, tmp_path, monkeypatch):
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    options = PipelineOptions([*argv, "--output_root", str(tmp_path)])
    view = options.view_as(
        streaming.StreamingOptions if module is streaming else backfill.BackfillOptions
    )
    pipeline = beam.Pipeline(options=options)
    module.build(pipeline, view)
    dofns = _dofns(pipeline)
    assert len(dofns) > 20
    assert direct_runner.install_spec_cache()
    for dofn in dofns:
        for _ in range(2):  # the second answer comes from the cache
            assert _names(userstate.get_dofn_specs(dofn)) == _names(_ORIGINAL(dofn)), dofn
    if module is streaming:
        assert any(_names(_ORIGINAL(d))[0] for d in dofns), "a stateful DoFn was checked"


def test_state_and_timer_specs_of_a_stateful_dofn():
    direct_runner.install_spec_cache()
    fn = _DedupeShardFn(ttl_s=60)
    assert _names(userstate.get_dofn_specs(fn)) == (
        ["high_water", "next_expiry", "seen"],
        ["ts-expiry"],
    )
    assert userstate.is_stateful_dofn(fn)


class _Counting:
    def process(self, element, count=beam.DoFn.StateParam(COUNT)):
        yield element


class _Delegating(beam.DoFn):
    """Takes its process method from another object, as a bound method on the instance."""

    def __init__(self, delegate=None):
        super().__init__()
        if delegate is not None:
            self.process = delegate.process

    def process(self, element):
        yield element


def test_a_dofn_with_bound_methods_on_the_instance_is_inspected_every_time():
    direct_runner.install_spec_cache()
    plain, stateful = _Delegating(), _Delegating(_Counting())
    assert _names(userstate.get_dofn_specs(plain)) == ([], [])
    assert _names(userstate.get_dofn_specs(stateful)) == (["count"], [])  # not the class's
    assert _names(userstate.get_dofn_specs(plain)) == ([], [])
    assert _names(_ORIGINAL(stateful)) == (["count"], [])


def test_results_are_fresh_sets():
    direct_runner.install_spec_cache()
    fn = _DedupeShardFn(ttl_s=60)
    userstate.get_dofn_specs(fn)[0].clear()
    assert len(userstate.get_dofn_specs(fn)[0]) == 3


def test_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GENAI_NO_SPEC_CACHE", "1")
    assert not direct_runner.install_spec_cache()
    assert userstate.get_dofn_specs is _ORIGINAL
