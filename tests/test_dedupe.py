"""DeduplicateEvents: batch semantics (with copies chosen beforehand or a grouping, whatever
the streaming strategy), validation, the expiry rule and content digest as functions, labels,
and what is particular to one streaming strategy. The streaming semantics both strategies share
are in ``test_dedupe_semantics``."""

import datetime as dt
import inspect
import pickle

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from tests.factories import pinned_clock, redacted_event
from tests.support.pipelines import TestPipeline
from transforms.dedupe import (
    DEDUPE_STRATEGIES,
    DEFAULT_TTL_S,
    DUPLICATE_TAG,
    DeduplicateEvents,
    _DedupePerKeyFn,
    _DedupeShardFn,
    content_digest,
    copy_rank,
    expiry_micros,
    shard_of,
    sharded_clear_micros,
)
from transforms.elements import EventBatch

S = 1_000_000  # µs per second


def ev(event_id: str, t_s: int, **kw):
    return redacted_event(event_id=event_id, event_time_s=t_s, **kw)


def streaming_options():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def streaming_pipeline() -> TestPipeline:
    return TestPipeline(runner="BundleBasedDirectRunner", options=streaming_options())


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
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=-60)
    with pytest.raises(ValueError, match="num_shards"):
        DeduplicateEvents(num_shards=0)
    with pytest.raises(ValueError, match=r"strategy must be one of \('sharded', 'per_key'\)"):
        DeduplicateEvents(strategy="per-key")
    with pytest.raises(ValueError, match="clock goes with strategy='per_key'"):
        DeduplicateEvents(clock=pinned_clock(0))
    with pytest.raises(ValueError, match="clock must be a callable"):
        DeduplicateEvents(strategy="per_key", clock=Timestamp(0))
    DeduplicateEvents(strategy="per_key", clock=pinned_clock(0))  # valid


def test_default_ttl_covers_an_hour_of_lateness_and_a_one_minute_window():
    assert DEFAULT_TTL_S == 3600 + 60
    assert inspect.signature(DeduplicateEvents).parameters["ttl_s"].default == DEFAULT_TTL_S


@pytest.mark.parametrize("dofn", [_DedupeShardFn, _DedupePerKeyFn])
@pytest.mark.parametrize("ttl_s", [None, 0, -1])
def test_stateful_dofns_reject_a_missing_or_non_positive_ttl(dofn, ttl_s):
    with pytest.raises(ValueError, match="ttl_s must be a positive number of seconds"):
        dofn(ttl_s)


def test_per_key_dofn_declares_one_state_cell_and_one_watermark_timer():
    state, timers = userstate.get_dofn_specs(_DedupePerKeyFn(60))
    assert state == {_DedupePerKeyFn.FIRST_DIGEST}
    assert _DedupePerKeyFn.FIRST_DIGEST.name == "first_digest"
    assert timers == {_DedupePerKeyFn.EXPIRY}
    assert _DedupePerKeyFn.EXPIRY.time_domain == TimeDomain.WATERMARK


def test_per_key_dofn_pickles_with_its_clock():
    pinned = pickle.loads(pickle.dumps(_DedupePerKeyFn(60, pinned_clock(3000))))
    assert pinned._clock() == Timestamp(3000)
    default = pickle.loads(pickle.dumps(_DedupePerKeyFn(60)))
    before = Timestamp.now()
    assert before <= default._clock() <= Timestamp.now()  # the wall clock


def test_expiry_is_the_ttl_after_the_later_of_event_time_and_arrival():
    ttl = 60 * S
    assert expiry_micros(100 * S, 100 * S, ttl) == 160 * S  # on time
    assert expiry_micros(100 * S, 3000 * S, ttl) == 3060 * S  # late: from its arrival
    assert expiry_micros(3000 * S, 2990 * S, ttl) == 3060 * S  # stamped ahead of the clock


def test_sharded_clear_is_the_next_grid_step_at_most_a_tenth_of_the_ttl_later():
    ttl = 60 * S  # grid 6 s
    assert sharded_clear_micros(70 * S, ttl) == 72 * S
    assert sharded_clear_micros(72 * S, ttl) == 72 * S
    assert sharded_clear_micros(72 * S + 1, ttl) == 78 * S
    assert sharded_clear_micros(2 * S + 1, 5 * S) == 3 * S  # grid never under 1 s
    for expiry in range(0, 100 * S, 999_983):
        assert expiry <= sharded_clear_micros(expiry, ttl) < expiry + ttl // 10


def test_content_digest_covers_what_the_gateway_reported_and_nothing_derived():
    event = redacted_event()
    digest = content_digest(event)
    assert digest.hex() == "a6b2930f4439fb1c"  # the same in every process and release
    derived = event._replace(
        processed_at=event.processed_at + dt.timedelta(hours=1),
        redaction_engine="dlp-v2",
        policy_version="2027-01",
        data_class="RESTRICTED",
        redaction_counts={"EMAIL": 1},
        prompt="Summarize the quarterly report for Ada.",
        response=None,
        unknown_field_count=3,
    )
    assert content_digest(derived) == digest
    # As a coder might hand the same values back: an integral float as an int, a list.
    flagged = event._replace(latency_ms=250.0, policy_flags=("blocked",))
    as_decoded = event._replace(latency_ms=250, policy_flags=["blocked"])
    assert content_digest(as_decoded) == content_digest(flagged)
    reported = {
        "request_id": "req-retry",
        "user_key": "user-key-0002",
        "event_time": event.event_time + dt.timedelta(microseconds=1),
        "model": "gemini-2.5-flash",
        "model_version": None,
        "latency_ms": 250.5,
        "token_count": 301,
        "prompt_tokens": None,
        "completion_tokens": 101,
        "policy_flags": ("blocked",),
        "region": "us-central1",
        "schema_version": "2",
    }
    digests = {content_digest(event._replace(**{name: value})) for name, value in reported.items()}
    assert len(digests) == len(reported) and digest not in digests


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
        .add_elements([stamped(batch_of([ev("a", 12, request_id="first")]), 12)])
        .advance_watermark_to(3000)  # the backlog moves on; the clock reads 10,000
        .add_elements([stamped(batch_of([ev("a", 12, request_id="copy")]), 12)])
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
        .add_elements([stamped(batch_of([ev("a", 12, request_id="first")]), 12)])
        .advance_watermark_to(73)  # past 12 + 60
        .add_elements([stamped(batch_of([ev("a", 12, request_id="copy")]), 12)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | DeduplicateEvents(60, strategy="per_key")
        assert_that(ids(out.unique, "U"), equal_to([("a", "first")]), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to([("a", "copy")]), label="duplicates")


def test_shards_are_stable_and_bounded():
    assert shard_of("8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11", 32) == shard_of(
        "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11", 32
    )
    assert {shard_of(f"id-{i}", 8) for i in range(1000)} == set(range(8))
