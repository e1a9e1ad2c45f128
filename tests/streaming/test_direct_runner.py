"""The DirectRunner fixes (``pipelines.local.direct_runner_fixes``): they change no answer, are
in place for one local run only, refuse an untested Beam, and the Beam code they fork or wrap
is pinned, so a Beam upgrade fails here first. That a local run of the streaming command leaves
Beam as it found it is in ``tests/e2e/test_direct_runner.py``."""

from __future__ import annotations

import hashlib
import inspect
import logging

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.evaluation_context import DirectUnmergedState, EvaluationContext
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import (
    _ListStateTag,
    _ReadModifyWriteStateTag,
    _WatermarkHoldStateTag,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import backfill, streaming
from pipelines.local import direct_runner_fixes as direct_runner
from pipelines.local.run import build_locally
from tests.support.direct_runner import (
    ORIGINAL_GET_DOFN_SPECS,
    ORIGINAL_HANDLE_RESULT,
    ORIGINAL_WITHOUT_EXTRACTION,
    fixes_removed,
)
from tests.support.pipelines import TestPipeline, local_pipeline
from transforms.dedupe import _DedupeShardFn

COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())


@pytest.fixture(autouse=True)
def _fresh_cache():
    with fixes_removed():
        yield


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
        (streaming, ["--source", "synthetic", "--rate", "10", "--duration_s", "1"]),
        (backfill, ["--input", __file__]),
    ],
)
def test_every_dofn_of_both_pipelines_gets_the_same_specs(module, argv, tmp_path, monkeypatch):
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    options = PipelineOptions([*argv, "--output_root", str(tmp_path)])
    view = options.view_as(
        streaming.StreamingOptions if module is streaming else backfill.BackfillOptions
    )
    pipeline = local_pipeline(options)
    build_locally(pipeline, options, view, module.build)
    dofns = _dofns(pipeline)
    assert len(dofns) > 20
    assert direct_runner.install_spec_cache()
    for dofn in dofns:
        for _ in range(2):  # the second answer comes from the cache
            assert _names(userstate.get_dofn_specs(dofn)) == _names(
                ORIGINAL_GET_DOFN_SPECS(dofn)
            ), dofn
    if module is streaming:
        assert any(_names(ORIGINAL_GET_DOFN_SPECS(d))[0] for d in dofns), (
            "a stateful DoFn was checked"
        )


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
    assert _names(ORIGINAL_GET_DOFN_SPECS(stateful)) == (["count"], [])


def test_results_are_fresh_sets():
    direct_runner.install_spec_cache()
    fn = _DedupeShardFn(ttl_s=60)
    userstate.get_dofn_specs(fn)[0].clear()
    assert len(userstate.get_dofn_specs(fn)[0]) == 3


def test_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GENAI_NO_SPEC_CACHE", "1")
    assert not direct_runner.install_spec_cache()
    assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS


# --- trigger state tags: the no-extraction combine function made once ------------------


def test_a_combining_tag_without_extraction_reads_and_merges_the_same():
    tag = trigger._CombiningValueStateTag("count", sum).with_prefix("late")
    assert direct_runner.install_tag_cache()
    first, second = tag.without_extraction(), tag.without_extraction()
    beams = ORIGINAL_WITHOUT_EXTRACTION(tag)
    assert first.combine_fn is second.combine_fn  # built once
    assert (first.tag, second.tag) == (beams.tag, beams.tag)
    for fn in (first.combine_fn, beams.combine_fn):
        five = fn.add_input(fn.create_accumulator(), 5)
        seven = fn.add_input(fn.create_accumulator(), 7)
        merged = fn.merge_accumulators([five, seven])
        assert fn.extract_output(merged) == merged  # the accumulator itself: no extraction
        assert tag.combine_fn.extract_output(merged) == 12
    other = trigger._CombiningValueStateTag("count", max).without_extraction()
    assert other.combine_fn is not first.combine_fn  # one per original combine function
    direct_runner.uninstall_tag_cache()
    assert trigger._CombiningValueStateTag.without_extraction is ORIGINAL_WITHOUT_EXTRACTION


def test_the_tag_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GENAI_NO_TAG_CACHE", "1")
    assert not direct_runner.install_tag_cache()
    assert trigger._CombiningValueStateTag.without_extraction is ORIGINAL_WITHOUT_EXTRACTION


# --- expired window state collected, empty keyed state dropped -----------------------------


class _Pane(beam.DoFn):
    def process(self, kv, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        yield kv[0], kv[1], w.start.micros, pane.timing, pane.index


_CAPTURED: list = []  # what _capture saw (a module global: the matcher is pickled by reference)


def _capture(got) -> None:
    _CAPTURED.extend(got)


def _late_stream() -> TestStream:
    """40 keys over four 1-minute windows; each window gets early, on-time, late (within the
    2-minute lateness) and too-late values."""
    stream = TestStream().advance_watermark_to(0)
    for minute in range(4):
        start = minute * 240  # apart, so the watermark only moves forward
        keys = [f"k{i}" for i in range(10 * minute, 10 * minute + 10)]
        stream = (
            stream.add_elements([TimestampedValue((k, 1), start + 1) for k in keys])
            .advance_processing_time(31)  # an EARLY pane
            .add_elements([TimestampedValue((k, 10), start + 2) for k in keys])
            .advance_watermark_to(start + 61)  # ON_TIME
            .add_elements([TimestampedValue((k, 100), start + 3) for k in keys])  # LATE
            .advance_watermark_to(start + 60 + 121)
            .add_elements([TimestampedValue((k, 1000), start + 4) for k in keys])  # too late
        )
    # Processing time moves on at the end too, as a live stream's does: the early-firing timers
    # left of the last window fire (a window with a timer left is never collected).
    return stream.advance_processing_time(60).advance_watermark_to_infinity()


def _run_late_stream(contexts: list) -> tuple[list, int]:
    """The panes of ``_late_stream`` summed per key and window, and how many keyed entries the
    group-by-window step kept at the end."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    _CAPTURED.clear()
    with TestPipeline(options=options) as p:
        out = (
            p
            | _late_stream()
            | beam.WindowInto(
                window.FixedWindows(60),
                trigger=trigger.AfterWatermark(
                    early=trigger.AfterProcessingTime(30), late=trigger.AfterCount(1)
                ),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=120,
            )
            | "Sum" >> beam.CombinePerKey(sum)
            | beam.ParDo(_Pane())
        )
        assert_that(out, _capture)
    kept = 0
    for applied, states in contexts[-1]._transform_keyed_states.items():
        if "Sum" in applied.full_label:
            kept += sum(1 for key in states if isinstance(key, bytes))
    return sorted(_CAPTURED), kept


@pytest.fixture
def _contexts(monkeypatch):
    contexts = []
    original = EvaluationContext.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        contexts.append(self)

    monkeypatch.setattr(EvaluationContext, "__init__", record)
    return contexts


def test_collecting_expired_windows_changes_no_pane_and_drops_their_keys(_contexts, monkeypatch):
    monkeypatch.setattr(direct_runner, "_COLLECT_EVERY_S", 0.0)  # collect after every bundle
    plain_panes, plain_kept = _run_late_stream(_contexts)
    assert direct_runner.install_state_pruning()
    panes, kept = _run_late_stream(_contexts)
    assert panes == plain_panes
    assert {(key, total) for key, total, *_ in panes if total >= 111} == {
        (f"k{i}", 111) for i in range(40)
    }  # the late value counted, the too-late one not
    assert (plain_kept, kept) == (40, 0)  # Beam keeps every key; collected, none is left


def test_state_pruning_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GENAI_NO_STATE_PRUNING", "1")
    assert not direct_runner.install_state_pruning()
    assert EvaluationContext.handle_result is ORIGINAL_HANDLE_RESULT


def test_only_state_holding_nothing_is_empty():
    state = DirectUnmergedState()
    assert direct_runner.is_empty_state(state)
    state.get_state("w", _ListStateTag("elements"))  # a read leaves an empty list behind
    assert direct_runner.is_empty_state(state)
    state.set_global_state(_ReadModifyWriteStateTag("window_ids"), {})
    assert direct_runner.is_empty_state(state)
    held = DirectUnmergedState()
    held.add_state("w", _ReadModifyWriteStateTag("n"), 0)  # a stored 0 is state
    assert not direct_runner.is_empty_state(held)
    timed = DirectUnmergedState()
    timed.set_timer("w", "t", TimeDomain.WATERMARK, 10)
    assert not direct_runner.is_empty_state(timed)
    timed.clear_timer("w", "t", TimeDomain.WATERMARK)
    assert direct_runner.is_empty_state(timed)
    global_ = DirectUnmergedState()
    global_.set_global_state(_ReadModifyWriteStateTag("g"), 1)
    assert not direct_runner.is_empty_state(global_)


def test_a_window_with_a_timer_left_is_not_collected():
    early, late = window.IntervalWindow(0, 60), window.IntervalWindow(60, 120)
    state = DirectUnmergedState()
    state.set_global_state(_ReadModifyWriteStateTag("window_ids"), {early: [1], late: [2]})
    state.add_state(1, _ListStateTag("elements"), "a")
    state.add_state(2, _ListStateTag("elements"), "b")
    state.set_timer(2, "t", TimeDomain.WATERMARK, 119)
    collected = direct_runner.without_expired_windows(state, Timestamp(500), Duration(120))
    assert collected.global_state["window_ids"] == {late: [2]}
    assert 1 not in collected.state and collected.state[2]["elements"] == ["b"]
    assert state.global_state["window_ids"] == {early: [1], late: [2]}  # the original unchanged
    assert direct_runner.without_expired_windows(state, Timestamp(150), Duration(120)) is state


@pytest.mark.parametrize(
    "combiner",
    [
        window.TimestampCombiner.OUTPUT_AT_EARLIEST,
        window.TimestampCombiner.OUTPUT_AT_LATEST,
        window.TimestampCombiner.OUTPUT_AT_EOW,
    ],
)
def test_compacted_holds_read_the_same(combiner):
    fixed = window.IntervalWindow(0, 60)
    impl = window.TimestampCombiner.get_impl(combiner, window.FixedWindows(60))
    tag = _WatermarkHoldStateTag("watermark", impl)
    state = DirectUnmergedState()
    for second in (30, 5, 50, 5, 17):
        state.add_state(fixed, tag, impl.assign_output_time(fixed, Timestamp(second)))
    before = (state.get_state(fixed, tag), state.get_earliest_hold())
    kept = state.state[fixed]["watermark"]
    direct_runner.compact_holds(state)
    assert len(state.state[fixed]["watermark"]) <= 2
    assert (state.get_state(fixed, tag), state.get_earliest_hold()) == before
    assert len(kept) == 5  # the old list itself is unchanged (copies may hold it)


# --- timer scans visit only keys with a timer due -----------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = Timestamp(0)

    def time(self):
        return self.now


class _Step:
    """What ``extract_transform_timers`` reads of a ``_TransformWatermarks``."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._keyed_states: dict = {}
        self._input_watermark = Timestamp(0)
        self._clock = _Clock()
        self._fired_timers: set = set()


def _firings(step, extract) -> tuple[list, bool]:
    fired, realtime = extract(step)
    step._fired_timers.clear()
    return sorted(
        repr((f.encoded_key, f.window, f.name, f.time_domain, f.timestamp)) for f in fired
    ), realtime


_COMMIT = st.tuples(
    st.sampled_from([b"a", b"b", b"c", b"d", None]),
    st.lists(
        st.tuples(
            st.sampled_from(["w1", "w2"]),
            st.sampled_from(["t", "u"]),
            st.sampled_from([TimeDomain.WATERMARK, TimeDomain.REAL_TIME]),
            st.integers(0, 100),
        ),
        max_size=3,
    ),
)
_STEP = st.one_of(
    st.tuples(st.just("commit"), _COMMIT),
    st.tuples(st.just("drop"), st.sampled_from([b"a", b"b", b"c", b"d", None])),
    st.tuples(st.just("watermark"), st.integers(0, 100)),
    st.tuples(st.just("clock"), st.integers(0, 100)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=40))
def test_the_indexed_timer_scan_finds_what_beams_scan_finds(steps):
    """After any sequence of commits (a key's state replaced, as the runner does), dropped keys
    and watermark or clock moves, the fork returns the timers Beam's scan returns (sorted: Beam
    orders them by timestamp only) and the same answer on processing-time timers."""
    step = _Step()
    original = direct_runner._beam().extract_transform_timers
    for kind, arg in steps:
        if kind == "commit":
            key, timers = arg
            state = DirectUnmergedState()
            for win, name, domain, at in timers:
                state.set_timer(win, name, domain, Timestamp(at))
            step._keyed_states[key] = state
            direct_runner._timer_index(step).add(key, state)
        elif kind == "drop":
            step._keyed_states.pop(arg, None)
        elif kind == "watermark":
            step._input_watermark = max(step._input_watermark, Timestamp(arg))
        else:
            step._clock.now = max(step._clock.now, Timestamp(arg))
        assert _firings(step, direct_runner._extract_transform_timers) == _firings(step, original)


# --- scope, version guard, pinned sources ------------------------------------------------


def test_installed_for_one_run_and_removed_after_it_even_when_it_fails():
    assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS
    with direct_runner.installed() as on:
        assert on
        assert userstate.get_dofn_specs is direct_runner.cached_dofn_specs
        assert EvaluationContext.handle_result is not ORIGINAL_HANDLE_RESULT
        assert trigger._CombiningValueStateTag.without_extraction is not (
            ORIGINAL_WITHOUT_EXTRACTION
        )
    assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS
    assert EvaluationContext.handle_result is ORIGINAL_HANDLE_RESULT
    assert trigger._CombiningValueStateTag.without_extraction is ORIGINAL_WITHOUT_EXTRACTION
    with pytest.raises(RuntimeError), direct_runner.installed():
        raise RuntimeError("the run failed")
    assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS
    assert EvaluationContext.handle_result is ORIGINAL_HANDLE_RESULT


def test_nested_runs_keep_them_until_the_outer_one_ends():
    with direct_runner.installed():
        with direct_runner.installed():
            pass
        assert userstate.get_dofn_specs is direct_runner.cached_dofn_specs
    assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS


def test_an_untested_beam_gets_a_warning_and_no_fix(monkeypatch, caplog):
    monkeypatch.setattr(direct_runner, "_BEAM", None)
    monkeypatch.setattr(direct_runner, "_REFUSED", set())
    monkeypatch.setattr(direct_runner.beam, "__version__", "2.99.0")
    with (
        caplog.at_level(logging.WARNING, logger=direct_runner.__name__),
        direct_runner.installed() as on,
    ):
        assert not on
        assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS
        assert EvaluationContext.handle_result is ORIGINAL_HANDLE_RESULT
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "2.77.0" in warning and "2.99.0" in warning


def _digest(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()[:16]


# The Beam code the fixes fork (extract_transform_timers) or wrap and whose private state they
# read (the rest), as of Beam 2.77.0. A new Beam changes a digest: read the new code, adapt the
# fix (or drop it if Beam fixed the cause, see docs/adr), then update the digest and
# TESTED_BEAM_VERSION together.
PINNED_SOURCES = {
    "watermark_manager._TransformWatermarks.extract_transform_timers": "897adb07f063798e",
    "evaluation_context.EvaluationContext.handle_result": "5f8b5c3277610476",
    "evaluation_context.EvaluationContext.__init__": "eff10da5f858f2c7",
    "userstate.get_dofn_specs": "eeb36145d3115aa0",
    "trigger.GeneralTriggerDriver": "8d32e3915f214f02",
    "evaluation_context.DirectUnmergedState": "37cf61e76c8361ae",
    "trigger.InMemoryUnmergedState": "61b8ef7a2a93b190",
    "trigger._CombiningValueStateTag": "ef257d19e45ca8bd",
    "direct_runner._StreamingGroupAlsoByWindow": "af74419c67c84995",
}


def _pinned(name: str):
    from apache_beam.runners.direct import direct_runner as beam_direct_runner
    from apache_beam.runners.direct import evaluation_context, watermark_manager

    modules = {
        "watermark_manager": watermark_manager,
        "evaluation_context": evaluation_context,
        "userstate": userstate,
        "trigger": trigger,
        "direct_runner": beam_direct_runner,
    }
    module, *path = name.split(".")
    value = modules[module]
    for part in path:
        value = getattr(value, part)
    return value


def test_the_beam_code_the_fixes_depend_on_is_pinned():
    assert beam.__version__ == direct_runner.TESTED_BEAM_VERSION
    changed = {
        name: _digest(_pinned(name))
        for name, digest in PINNED_SOURCES.items()
        if _digest(_pinned(name)) != digest
    }
    assert not changed, f"Beam code the DirectRunner fixes depend on changed: {changed}"
