"""DeduplicateEvents on unbounded input (TestStream): what is particular to one streaming
strategy (the sharded one's expiry grid, a backlog read into the stream, the per-key one's wall
clock), copies refused on unbounded input, and stable step labels. The semantics both strategies
share are in ``test_dedupe_semantics``."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.support.dedupe import batch_of, ev, ids
from tests.support.factories import pinned_clock
from tests.support.pipelines import TestPipeline, streaming_options, streaming_pipeline
from transforms.dedupe import DEDUPE_STRATEGIES, DUPLICATE_TAG, DeduplicateEvents


def stamped(value, t_s):
    return TimestampedValue(value, t_s)


def test_copies_need_offsets_and_bounded_input():
    with pytest.raises(Exception, match="line offsets"), TestPipeline() as p:
        batches = p | "Batches" >> beam.Create([batch_of([ev("a", 1)])])
        copies = p | "Copies" >> beam.Create([("a", ("s", 0))])
        _ = batches | DeduplicateEvents(copies=copies)
    with pytest.raises(ValueError, match="bounded"), streaming_pipeline() as p:
        stream = p | TestStream().add_elements([batch_of([ev("a", 1)])])
        _ = stream | DeduplicateEvents(copies=p | beam.Create([]))


def test_sharded_forgets_an_id_at_the_grid_step_after_its_expiry():
    """Documented behaviour of the sharded strategy: once the watermark passes first copy +
    TTL, rounded up to the expiry grid (TTL / 10, here 6 s: 70 s -> 72 s), the id is
    forgotten; not before."""
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([stamped(batch_of([ev("a", 10, input_id="first")]), 10)])
        .add_elements([stamped(batch_of([ev("a", 10, input_id="within-ttl")]), 10)])
        .advance_watermark_to(10 + 60 + 1)  # past the TTL, not yet past the grid step
        .add_elements([stamped(batch_of([ev("a", 10, input_id="within-grid")]), 10)])
        .advance_watermark_to(72 + 1)  # past the grid step: the timer clears the id
        .add_elements([stamped(batch_of([ev("a", 10, input_id="after-ttl")]), 10)])
        .add_elements([stamped(batch_of([ev("b", 100, input_id="b1")]), 100)])
        .add_elements([stamped(batch_of([ev("b", 100, input_id="b2")]), 100)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
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


def _steps(strategy: str, bounded: bool) -> set[str]:
    """The labels of the steps directly inside ``DeduplicateEvents``."""
    pipeline = beam.Pipeline(options=streaming_options())
    source = (
        beam.Create([batch_of([ev("a", 1)])])
        if bounded
        else TestStream().add_elements([batch_of([ev("a", 1)])])
    )
    _ = pipeline | "Input" >> source | "DeduplicateEvents" >> DeduplicateEvents(strategy=strategy)
    labels = set()

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            parts = node.full_label.split("/")
            if parts[0] == "DeduplicateEvents" and len(parts) > 1:
                labels.add(parts[1])

    pipeline.visit(Visitor())
    return labels


def test_step_labels_are_stable():
    """Dataflow matches steps by label when a streaming job is updated in place."""
    assert _steps("sharded", bounded=False) == {"SplitByShard", "DedupeStream"}
    assert _steps("per_key", bounded=False) == {"KeyByEventId", "DedupePerKey", "BatchUnique"}
    for strategy in DEDUPE_STRATEGIES:
        assert _steps(strategy, bounded=True) == {"SplitByShard", "GroupByShard", "DedupeGroups"}


@pytest.mark.parametrize(
    ("strategy", "unique", "duplicates"),
    [
        ("sharded", [("a", "first"), ("a", "copy")], []),
        ("per_key", [("a", "first")], [("a", "copy")]),
    ],
)
def test_a_backlog_read_into_the_stream(strategy, unique, duplicates):
    """Where the strategies differ (module docstring, (a)): the clock is far ahead of the event
    times, as when a stream catches up on a backlog. The sharded strategy forgets an id
    ``ttl_s`` of event time after its shard's latest event; the per-key one remembers it until
    the watermark reaches the clock's reading plus ``ttl_s``."""
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([stamped(batch_of([ev("a", 12, input_id="first")]), 12)])
        .advance_watermark_to(3000)  # the backlog moves on; the clock reads 10,000
        .add_elements([stamped(batch_of([ev("a", 12, input_id="copy")]), 12)])
        .advance_watermark_to_infinity()
    )
    clock = pinned_clock(10_000) if strategy == "per_key" else None
    with streaming_pipeline() as p:
        out = p | stream | DeduplicateEvents(60, 4, strategy=strategy, clock=clock)
        assert_that(ids(out.unique, "U"), equal_to(unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(duplicates), label="duplicates")


def test_per_key_reads_the_wall_clock_by_default():
    """Without a pinned clock the arrival is the worker's wall clock, decades after the
    stream's times here: the id is still held when the watermark passes its event time plus
    the TTL."""
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([stamped(batch_of([ev("a", 12, input_id="first")]), 12)])
        .advance_watermark_to(73)  # past 12 + 60
        .add_elements([stamped(batch_of([ev("a", 12, input_id="copy")]), 12)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | DeduplicateEvents(60, strategy="per_key")
        assert_that(ids(out.unique, "U"), equal_to([("a", "first")]), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to([("a", "copy")]), label="duplicates")
