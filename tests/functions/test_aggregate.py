"""AggregateMetrics as plain functions: argument validation, and the CombineFn on its own
(merges of encoded partials, a pane's partials merged at once, no aliasing, unsplit tokens, the
old accumulator encoding). In a pipeline: ``tests/transforms/test_aggregate.py`` and
``tests/streaming/test_aggregate.py``."""

from __future__ import annotations

import pickle

import pytest

from tests.support.aggregate import E1, E2, E3, T0_S, ev
from transforms.aggregate import (
    AggregateMetrics,
    _key_by_model_region,
    _MergePartialsFn,
    _MetricsCombineFn,
)
from transforms.elements import RedactedEvent


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size_s": 0},
        {"window_size_s": -60},
        {"allowed_lateness_s": 0},
        {"early_firing_s": -1},
    ],
)
def test_non_positive_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AggregateMetrics(**kwargs)


@pytest.mark.parametrize("kwargs", [{"window_size_s": 60.0}, {"early_firing_s": True}])
def test_non_int_arguments_are_rejected(kwargs):
    with pytest.raises(TypeError):
        AggregateMetrics(**kwargs)


# --- the CombineFn on its own: merges, coder, no aliasing ------------------------------------


def _accumulate(fn: _MetricsCombineFn, events: list[RedactedEvent]):
    acc = fn.create_accumulator()
    for e in events:
        acc = fn.add_input(acc, _key_by_model_region(e)[1])
    return acc


def test_merging_encoded_partial_accumulators_equals_one_pass():
    fn = _MetricsCombineFn()
    events = [
        ev(
            T0_S + i % 60,
            event_id=f"e{i}",
            user_key=f"u{i % 40}",
            latency_ms=float(i % 17) * 37.5,
            token_count=i,
            prompt_tokens=None if i % 4 else i // 2,
            policy_flags=("pii_redacted",) if i % 3 else (),
            data_class=("PUBLIC", "INTERNAL")[i % 2],
            redaction_counts={"EMAIL_ADDRESS": i % 3},
        )
        for i in range(600)
    ]
    coder = fn.get_accumulator_coder()
    parts = [
        coder.decode(coder.encode(_accumulate(fn, events[:250]))),
        pickle.loads(pickle.dumps(_accumulate(fn, events[250:400]))),
        _accumulate(fn, events[400:]),
    ]
    last_before = fn.extract_output(parts[2])
    merged = fn.extract_output(fn.merge_accumulators(parts))
    single = fn.extract_output(_accumulate(fn, events))
    assert merged._replace(users_hll=None) == single._replace(users_hll=None)
    assert merged.distinct_users_approx == 40
    assert fn.extract_output(parts[2]) == last_before  # only the first may be modified


def test_merging_a_panes_partials_at_once_equals_merging_them_one_by_one():
    # The runner re-combines a window's partials for every streaming pane with add_inputs.
    fn = _MergePartialsFn()
    events = [
        ev(T0_S + i % 60, event_id=f"e{i}", user_key=f"u{i % 70}", latency_ms=float(i % 23) * 11.0)
        for i in range(300)
    ]
    parts = [_accumulate(_MetricsCombineFn(), events[i : i + 30]) for i in range(0, 300, 30)]
    before = [fn.extract_output(p) for p in parts]
    one_by_one = fn.create_accumulator()
    for part in parts:
        one_by_one = fn.add_input(one_by_one, part)
    at_once = fn.extract_output(fn.add_inputs(fn.create_accumulator(), iter(parts)))
    assert at_once._replace(users_hll=None) == fn.extract_output(one_by_one)._replace(
        users_hll=None
    )
    assert at_once.request_count == 300 and at_once.distinct_users_approx == 70
    assert [fn.extract_output(p) for p in parts] == before  # the partials are not modified
    empty = fn.extract_output(fn.add_inputs(fn.create_accumulator(), []))
    assert empty.request_count == 0


def test_extracted_output_does_not_change_when_the_accumulator_does():
    # In accumulating mode the runner keeps adding to an accumulator after a pane fired.
    fn = _MetricsCombineFn()
    acc = _accumulate(fn, [E1])
    pane = fn.extract_output(acc)
    snapshot = pickle.loads(pickle.dumps(pane))
    acc = fn.add_input(acc, _key_by_model_region(E3)[1])
    assert fn.extract_output(acc).request_count == 2
    assert pane == snapshot


def test_unsplit_tokens_are_what_token_count_has_beyond_the_reported_split():
    fn = _MetricsCombineFn()
    events = [
        # Both reported: the split is taken as it is, even if token_count disagrees (0).
        ev(T0_S, event_id="both", token_count=100, prompt_tokens=70, completion_tokens=20),
        ev(T0_S, event_id="prompt", token_count=100, prompt_tokens=70, completion_tokens=None),
        ev(T0_S, event_id="completion", token_count=100, prompt_tokens=None, completion_tokens=40),
        ev(T0_S, event_id="neither", token_count=100, prompt_tokens=None, completion_tokens=None),
        # More reported than token_count: nothing unsplit, never negative.
        ev(T0_S, event_id="over", token_count=10, prompt_tokens=25, completion_tokens=None),
    ]
    totals = fn.extract_output(_accumulate(fn, events))
    assert (
        totals.token_sum,
        totals.prompt_token_sum,
        totals.completion_token_sum,
        totals.unsplit_token_sum,
    ) == (410, 165, 60, 0 + 30 + 60 + 100 + 0)


def test_accumulators_encoded_before_unsplit_tokens_existed_still_decode():
    # A streaming job updated in place holds accumulators in the old 9-field encoding.
    fn = _MetricsCombineFn()
    coder = fn.get_accumulator_coder()
    legacy = pickle.dumps(pickle.loads(coder.encode(_accumulate(fn, [E1, E2])))[:9])
    decoded = coder.decode(legacy)
    assert (decoded.request_count, decoded.token_sum, decoded.unsplit_token_sum) == (2, 350, 0)
    decoded = fn.add_input(decoded, _key_by_model_region(E2)[1])
    assert fn.extract_output(decoded).unsplit_token_sum == 50
