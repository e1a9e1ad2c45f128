"""DeduplicateEvents on bounded input: the batch split, with copies chosen beforehand or a
grouping, whatever the streaming strategy, and the winner rule (``transforms.winner``): first
archived, then first in the input; a copy with other content is a conflict. Validation and the
rules as plain functions are in ``tests/functions/test_dedupe.py`` and ``test_winner.py``;
unbounded input in ``tests/streaming/test_dedupe*.py``."""

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support.dedupe import batch_of, ev, ids
from tests.support.pipelines import TestPipeline
from transforms.dedupe import (
    CONFLICT_TAG,
    DEDUPE_STRATEGIES,
    DUPLICATE_TAG,
    DeduplicateEvents,
    content_digest,
)
from transforms.winner import ArchivedCopy, archived_copy


def chosen_copies(events):
    """What ChooseCopies picks for these events in this order, no copy archived: per id
    carried more than once, the first copy's input and content."""
    by_id = {}
    for e in events:
        by_id.setdefault(e.event_id, []).append(e)
    return [
        (i, (copies[0].input_id, content_digest(copies[0])))
        for i, copies in by_id.items()
        if len(copies) > 1
    ]


def copy(event_id, t_s, name, **content):
    """A copy named by its input identity; names sort in input order."""
    return ev(event_id, t_s, input_id=name, **content)


# Batch scenarios: both ways of the batch split must give exactly this split:
# (events in input order, written, duplicates, conflicts), as (event_id, input name).
SCENARIOS = {
    "no duplicates": (
        [copy("a", 10, "1"), copy("b", 20, "2")],
        [("a", "1"), ("b", "2")],
        [],
        [],
    ),
    "duplicate in the same window": (
        [copy("a", 10, "1"), copy("a", 10, "2"), copy("b", 15, "3")],
        [("a", "1"), ("b", "3")],
        [("a", "2")],
        [],
    ),
    "a retry re-stamped in another window is a conflict": (
        [copy("a", 10, "1"), copy("a", 130, "2")],
        [("a", "1")],
        [],
        [("a", "2")],
    ),
    "three copies, one with other content": (
        [copy("x", 5, "1"), copy("x", 5, "2"), copy("x", 5, "3", token_count=9)],
        [("x", "1")],
        [("x", "2")],
        [("x", "3")],
    ),
    "a forged copy with an earlier event time does not shadow the first": (
        [copy("a", 100, "1"), copy("a", 5, "2", request_id="forged")],
        [("a", "1")],
        [],
        [("a", "2")],
    ),
}


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_batch_split(name, strategy):
    """Batch, with a shuffle by shard: one input batch per event, in any order. The streaming
    strategy does not apply to bounded input."""
    events, unique, duplicates, conflicts = SCENARIOS[name]
    with TestPipeline() as p:
        batches = p | beam.Create([batch_of([e]) for e in reversed(events)])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, strategy=strategy)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")
        assert_that(ids(out[CONFLICT_TAG], "C"), equal_to(conflicts), label="conflicts")


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_batch_split_with_copies_chosen_beforehand(name, strategy):
    """Batch, with the copies chosen in a first pass: the events of one chunk with offsets."""
    events, unique, duplicates, conflicts = SCENARIOS[name]
    source = "gs://bucket/events.jsonl"
    with TestPipeline() as p:
        batches = p | "Batches" >> beam.Create([batch_of(events, source, range(len(events)))])
        copies = p | "Copies" >> beam.Create(chosen_copies(events))
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, copies=copies, strategy=strategy)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")
        assert_that(ids(out[CONFLICT_TAG], "C"), equal_to(conflicts), label="conflicts")


def test_copies_pick_the_winning_input_between_identical_copies():
    """Exact copies in two chunks: only the winning input is written; without an input id a
    line is known by (source, offset)."""
    first, again = ev("x", 5), ev("x", 5)
    with TestPipeline() as p:
        batches = p | "Batches" >> beam.Create(
            [batch_of([first], "f.jsonl", [0]), batch_of([again], "f.jsonl", [900])]
        )
        copies = p | "Copies" >> beam.Create([("x", ("f.jsonl#900", content_digest(again)))])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, copies=copies)
        assert_that(
            out.unique | "Offsets" >> beam.Map(lambda b: (b.source, b.events[0].event_id)),
            equal_to([("f.jsonl", "x")]),
            label="one copy written",
        )
        assert_that(
            out[DUPLICATE_TAG] | "DT" >> beam.Map(lambda e: e is not None),
            equal_to([True]),
            label="dups",
        )


def test_batch_is_exact_over_the_whole_input_whatever_the_gap():
    events = [copy("a", 10, "1"), copy("a", 10 + 86_400, "2")]
    with TestPipeline() as p:
        batches = p | beam.Create([batch_of([e]) for e in reversed(events)])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=2)
        assert_that(ids(out.unique, "U"), equal_to([("a", "1")]), label="unique")
        assert_that(ids(out[CONFLICT_TAG], "C"), equal_to([("a", "2")]), label="conflicts")
        assert_that(
            out.unique | "T" >> beam.Map(lambda e, t=beam.DoFn.TimestampParam: float(t)),
            equal_to([10.0]),
            label="a batch is stamped with its earliest event time",
        )
        assert_that(
            out[CONFLICT_TAG] | "CT" >> beam.Map(lambda e, t=beam.DoFn.TimestampParam: float(t)),
            equal_to([10.0 + 86_400]),
            label="a conflict keeps its event time",
        )


def test_an_archived_copy_wins_and_its_input_read_again_is_written_again():
    """The GroupByKey path with archived copies (a dead-letter replay): first archived wins;
    the input that won, read again, is written again (a re-run); the others lose to it."""
    archived_a = copy("a", 10, "pubsub:1")
    archived_b = copy("b", 10, "replay:dl-b")
    events = [
        copy("a", 10, "replay:dl-1"),  # same content as the archived copy: a duplicate
        copy("a", 10, "replay:dl-2", request_id="other"),  # a conflict
        copy("b", 10, "replay:dl-b"),  # the archived input itself: written again
        copy("c", 10, "replay:dl-c"),  # never archived: written
    ]
    with TestPipeline() as p:
        batches = p | "Batches" >> beam.Create([batch_of([e]) for e in events])
        archived = p | "Archived" >> beam.Create(
            [archived_copy(archived_a), archived_copy(archived_b)]
        ).with_output_types(ArchivedCopy)
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=3, archived=archived)
        assert_that(
            ids(out.unique, "U"), equal_to([("b", "replay:dl-b"), ("c", "replay:dl-c")]), "W"
        )
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to([("a", "replay:dl-1")]), "Dup")
        assert_that(ids(out[CONFLICT_TAG], "C"), equal_to([("a", "replay:dl-2")]), "Con")


def test_archived_input_is_ranked_first_processed_and_written_once_per_id():
    """A reconciliation: the events are archived copies. The first processed wins, whatever
    its event time; one input archived twice is still written once."""
    early = copy("a", 500, "pubsub:2")._replace(processed_at=copy("a", 0, "x").processed_at)
    late_but_earlier_event_time = copy("a", 5, "pubsub:1", request_id="forged")
    twice = [copy("b", 10, "pubsub:3"), copy("b", 10, "pubsub:3")]
    with TestPipeline() as p:
        batches = p | beam.Create(
            [batch_of([e]) for e in [late_but_earlier_event_time, early, *twice]]
        )
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=2, archived_input=True)
        assert_that(ids(out.unique, "U"), equal_to([("a", "pubsub:2"), ("b", "pubsub:3")]), "W")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to([("b", "pubsub:3")]), "Dup")
        assert_that(ids(out[CONFLICT_TAG], "C"), equal_to([("a", "pubsub:1")]), "Con")
