"""DeduplicateEvents: same semantics in batch (both strategies) and streaming, state that
expires in streaming."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.factories import EPOCH, redacted_event
from transforms.dedupe import DUPLICATE_TAG, DeduplicateEvents, copy_rank, shard_of
from transforms.elements import EventBatch


def ev(event_id: str, t_s: int, **kw):
    return redacted_event(event_id=event_id, event_time_s=t_s, **kw)


def streaming_options():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def ids(pcoll, label):
    """(event_id, request_id) of every event, whether the output holds batches or events."""
    return pcoll | label >> beam.FlatMap(
        lambda x: [(e.event_id, e.request_id) for e in getattr(x, "events", [x])]
    )


def batch_of(events, source="", offsets=()):
    return EventBatch(source, tuple(events), tuple(offsets))


def stamped(value, t_s):
    return TimestampedValue(value, t_s)


def chosen_copies(events, source):
    """The copies ChooseCopies would pick for events at offsets 0, 1, ... of ``source``:
    lowest (copy_rank, source, offset) per id carried more than once."""
    by_id = {}
    for offset, e in enumerate(events):
        by_id.setdefault(e.event_id, []).append((copy_rank(e), source, offset))
    return [(i, min(c)[1:]) for i, c in by_id.items() if len(c) > 1]


# Scenarios inside the TTL: both modes must give exactly the same split.
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


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_batch_split(name):
    """Batch, with a shuffle by shard: one input batch per event."""
    events, unique, duplicates = SCENARIOS[name]
    with TestPipeline() as p:
        batches = p | beam.Create([batch_of([e]) for e in events])
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_batch_split_with_copies_chosen_beforehand(name):
    """Batch, with the copies chosen in a first pass: the events of one chunk with offsets."""
    events, unique, duplicates = SCENARIOS[name]
    source = "gs://bucket/events.jsonl"
    with TestPipeline() as p:
        batches = p | "Batches" >> beam.Create([batch_of(events, source, range(len(events)))])
        copies = p | "Copies" >> beam.Create(chosen_copies(events, source))
        out = batches | DeduplicateEvents(ttl_s=60, num_shards=4, copies=copies)
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


def test_copies_need_offsets_and_bounded_input():
    with pytest.raises(Exception, match="line offsets"), TestPipeline() as p:
        batches = p | "Batches" >> beam.Create([batch_of([ev("a", 1)])])
        copies = p | "Copies" >> beam.Create([("a", ("s", 0))])
        _ = batches | DeduplicateEvents(copies=copies)
    streaming = TestPipeline(options=streaming_options())
    with pytest.raises(ValueError, match="bounded"), streaming as p:
        stream = p | TestStream().add_elements([batch_of([ev("a", 1)])])
        _ = stream | DeduplicateEvents(copies=p | beam.Create([]))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_streaming_split(name):
    events, unique, duplicates = SCENARIOS[name]
    stream = TestStream().advance_watermark_to(0)
    for e in events:  # arrival order = list order; the watermark stays inside the TTL
        t = (e.event_time - EPOCH).total_seconds()
        stream = stream.add_elements([stamped(batch_of([e]), t)])
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream | DeduplicateEvents(ttl_s=600, num_shards=4)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")


def test_streaming_duplicate_after_ttl_is_written_again():
    """Documented behaviour: once the watermark passes first copy + TTL, rounded up to the
    expiry grid (TTL / 10, here 6 s: 70 s -> 72 s), the id is forgotten; not before."""
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([stamped(batch_of([ev("a", 10, request_id="first")]), 10)])
        .add_elements([stamped(batch_of([ev("a", 10, request_id="within-ttl")]), 10)])
        .advance_watermark_to(10 + 60 + 1)  # past the TTL, not yet past the grid step
        .add_elements([stamped(batch_of([ev("a", 10, request_id="within-grid")]), 10)])
        .advance_watermark_to(72 + 1)  # past the grid step: the timer clears the id
        .add_elements([stamped(batch_of([ev("a", 10, request_id="after-ttl")]), 10)])
        .add_elements([stamped(batch_of([ev("b", 100, request_id="b1")]), 100)])
        .add_elements([stamped(batch_of([ev("b", 100, request_id="b2")]), 100)])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream | DeduplicateEvents(ttl_s=60, num_shards=1)
        assert_that(
            ids(out.unique, "U"),
            equal_to([("a", "first"), ("a", "after-ttl"), ("b", "b1")]),
            label="unique",
        )
        assert_that(
            ids(out[DUPLICATE_TAG], "D"),
            equal_to([("a", "within-ttl"), ("a", "within-grid"), ("b", "b2")]),
            label="duplicates",
        )


def test_streaming_late_event_is_remembered_for_the_ttl_after_it_arrived():
    """A copy of an event 20 minutes late, redelivered soon after, is still a duplicate."""
    stream = (
        TestStream()
        .advance_watermark_to(3000)
        .add_elements([stamped(batch_of([ev("now", 3000, request_id="on-time")]), 3000)])
        .add_elements([stamped(batch_of([ev("late", 1800, request_id="first")]), 1800)])
        .advance_watermark_to(3030)  # 30 s later: past 1800 + ttl, not past 3000 + ttl
        .add_elements([stamped(batch_of([ev("late", 1800, request_id="redelivered")]), 1800)])
        .advance_watermark_to(3000 + 60 + 1)  # now past 3000 + ttl: forgotten
        .add_elements([stamped(batch_of([ev("late", 1800, request_id="much-later")]), 1800)])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream | DeduplicateEvents(ttl_s=60, num_shards=1)
        assert_that(
            ids(out.unique, "U"),
            equal_to([("now", "on-time"), ("late", "first"), ("late", "much-later")]),
            label="unique",
        )
        assert_that(
            ids(out[DUPLICATE_TAG], "D"), equal_to([("late", "redelivered")]), label="duplicates"
        )


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


def test_configuration_is_validated():
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=None)
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=0)
    with pytest.raises(ValueError, match="num_shards"):
        DeduplicateEvents(num_shards=0)


def test_shards_are_stable_and_bounded():
    assert shard_of("8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11", 32) == shard_of(
        "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11", 32
    )
    assert {shard_of(f"id-{i}", 8) for i in range(1000)} == set(range(8))
