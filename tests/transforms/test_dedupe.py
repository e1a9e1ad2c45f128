"""DeduplicateEvents on bounded input: the batch split, with copies chosen beforehand or a
grouping, whatever the streaming strategy. Validation and the rules as plain functions are in
``tests/functions/test_dedupe.py``; unbounded input in ``tests/streaming/test_dedupe*.py``."""

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support.dedupe import batch_of, ev, ids
from tests.support.pipelines import TestPipeline
from transforms.dedupe import DEDUPE_STRATEGIES, DUPLICATE_TAG, DeduplicateEvents, copy_rank


def chosen_copies(events, source):
    """The copies ChooseCopies would pick for events at offsets 0, 1, ... of ``source``:
    lowest (copy_rank, source, offset) per id carried more than once."""
    by_id = {}
    for offset, e in enumerate(events):
        by_id.setdefault(e.event_id, []).append((copy_rank(e), source, offset))
    return [(i, min(c)[1:]) for i, c in by_id.items() if len(c) > 1]


# Batch scenarios: both ways of the batch split must give exactly this split.
SCENARIOS = {
    "no duplicates": (
        [ev("a", 10), ev("b", 20)],
        [("a", "req-0001"), ("b", "req-0001")],
        [],
    ),
    "duplicate in the same window": (
        [ev("a", 10, request_id="first"), ev("a", 10, request_id="second"), ev("b", 15)],
        [("a", "first"), ("b", "req-0001")],
        [("a", "second")],
    ),
    "duplicate across windows": (
        # A gateway retry re-stamped the event 2 minutes later: same id, another window.
        [ev("a", 10, request_id="first"), ev("a", 130, request_id="retry")],
        [("a", "first")],
        [("a", "retry")],
    ),
    "three copies": (
        [ev("x", 5, request_id="1"), ev("x", 5, request_id="2"), ev("x", 5, request_id="3")],
        [("x", "1")],
        [("x", "2"), ("x", "3")],
    ),
}


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_batch_split(name, strategy):
    """Batch, with a shuffle by shard: one input batch per event. The streaming strategy
    does not apply to bounded input."""
    events, unique, duplicates = SCENARIOS[name]
    with TestPipeline() as p:
        batches = p | beam.Create([batch_of([e]) for e in events])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, strategy=strategy)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_batch_split_with_copies_chosen_beforehand(name, strategy):
    """Batch, with the copies chosen in a first pass: the events of one chunk with offsets."""
    events, unique, duplicates = SCENARIOS[name]
    source = "gs://bucket/events.jsonl"
    with TestPipeline() as p:
        batches = p | "Batches" >> beam.Create([batch_of(events, source, range(len(events)))])
        copies = p | "Copies" >> beam.Create(chosen_copies(events, source))
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, copies=copies, strategy=strategy)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")


def test_copies_pick_by_position_between_identical_copies():
    """Exact redeliveries (identical content) in two chunks: only the chosen line is written."""
    first, again = ev("x", 5, request_id="same"), ev("x", 5, request_id="same")
    with TestPipeline() as p:
        batches = p | "Batches" >> beam.Create(
            [batch_of([first], "f.jsonl", [0]), batch_of([again], "f.jsonl", [900])]
        )
        copies = p | "Copies" >> beam.Create([("x", ("f.jsonl", 900))])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, copies=copies)
        assert_that(
            out.unique | "Offsets" >> beam.Map(lambda b: (b.source, len(b.events))),
            equal_to([("f.jsonl", 1)]),
            label="one copy written",
        )
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to([("x", "same")]), label="dups")


def test_batch_is_exact_over_the_whole_input_whatever_the_gap():
    events = [ev("a", 10, request_id="first"), ev("a", 10 + 86_400, request_id="next-day")]
    with TestPipeline() as p:
        batches = p | beam.Create([batch_of([e]) for e in reversed(events)])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=2)
        assert_that(ids(out.unique, "U"), equal_to([("a", "first")]), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to([("a", "next-day")]), label="dups")
        assert_that(
            out.unique | "T" >> beam.Map(lambda e, t=beam.DoFn.TimestampParam: float(t)),
            equal_to([10.0]),
            label="a batch is stamped with its earliest event time",
        )
        assert_that(
            out[DUPLICATE_TAG] | "DT" >> beam.Map(lambda e, t=beam.DoFn.TimestampParam: float(t)),
            equal_to([10.0 + 86_400]),
            label="a duplicate keeps its event time",
        )
