"""The streaming dedupe's semantics, one suite run against both strategies (``sharded`` and
``per_key``): every scenario must give exactly the same split with either: the first copy to
reach the state is written, a later copy with the same content is a duplicate, one with other
content (``content_digest``) a conflict.

The per-key strategy estimates an event's arrival with a clock, the sharded one with the latest
event time its shard had seen; each scenario pins the clock to the time its stream stands for,
so both estimates agree. TTL 60 s: the sharded strategy clears ids on a grid of 6 s, so event
times here are multiples of 6 and each expiry falls on a grid step, and the watermark is moved
to just before or just after an expiry, never onto it.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.support.dedupe import ids
from tests.support.factories import EPOCH, pinned_clock, redacted_event
from tests.support.pipelines import streaming_pipeline
from transforms.dedupe import CONFLICT_TAG, DEDUPE_STRATEGIES, DUPLICATE_TAG, DeduplicateEvents
from transforms.elements import EventBatch, RedactedEvent

TTL_S = 60


class Watermark(NamedTuple):
    seconds: int


class Scenario(NamedTuple):
    steps: tuple[RedactedEvent | Watermark, ...]  # each event is an input batch of its own
    unique: list[tuple[str, str]]  # (event_id, name) written
    duplicates: list[tuple[str, str]]
    clock_s: int = 0  # the per-key strategy's "now": 0 leaves each event's own time to rule
    num_shards: int = 4
    conflicts: list[tuple[str, str]] = []


def ev(event_id: str, t_s: int, name: str, **content) -> RedactedEvent:
    """A copy of ``event_id`` delivered as the input ``name``: copies with the same ``t_s`` and
    ``content`` are the same event (duplicates), others conflict."""
    return redacted_event(event_id=event_id, event_time_s=t_s, input_id=name, **content)


def seconds(event: RedactedEvent) -> float:
    return (event.event_time - EPOCH).total_seconds()


SCENARIOS = {
    "no duplicates": Scenario(
        (Watermark(0), ev("a", 12, "first"), ev("b", 18, "first")),
        unique=[("a", "first"), ("b", "first")],
        duplicates=[],
    ),
    "copies within the TTL": Scenario(
        (
            Watermark(0),
            ev("a", 12, "first"),
            Watermark(40),
            ev("a", 12, "redelivered"),
            Watermark(71),  # expiry 12 + 60 = 72 not passed yet
            ev("a", 12, "last-moment"),
        ),
        unique=[("a", "first")],
        duplicates=[("a", "redelivered"), ("a", "last-moment")],
    ),
    "a copy after the TTL is written again": Scenario(
        (
            Watermark(0),
            ev("a", 12, "first"),
            ev("b", 12, "first"),
            Watermark(73),  # past 72: both ids forgotten
            ev("a", 12, "after-ttl"),
        ),
        unique=[("a", "first"), ("b", "first"), ("a", "after-ttl")],
        duplicates=[],
    ),
    "a late copy and its copy shortly after": Scenario(
        (
            Watermark(3000),
            ev("now", 3000, "on-time"),
            ev("late", 1800, "first"),  # 20 minutes late: arrived at 3000
            Watermark(3030),  # past 1800 + 60, not past 3000 + 60
            ev("late", 1800, "redelivered"),
            Watermark(3061),  # past 3000 + 60: forgotten
            ev("late", 1800, "much-later"),
        ),
        unique=[("now", "on-time"), ("late", "first"), ("late", "much-later")],
        duplicates=[("late", "redelivered")],
        # "Now" is 3000 for the stream: the clock of the per-key strategy, and the latest
        # event time of the sharded one's only shard (one shard, so "now" is in it).
        clock_s=3000,
        num_shards=1,
    ),
    "copies re-stamped in other windows are conflicts": Scenario(
        (
            Watermark(0),
            ev("a", 12, "first"),
            ev("a", 66, "re-stamped-later"),  # a gateway retry, in the next 1-minute window
            ev("x", 114, "first"),
            ev("x", 48, "re-stamped-earlier"),  # two windows earlier
        ),
        unique=[("a", "first"), ("x", "first")],
        duplicates=[],
        conflicts=[("a", "re-stamped-later"), ("x", "re-stamped-earlier")],
    ),
    "a forged copy with an earlier event time does not shadow the first": Scenario(
        (
            Watermark(0),
            ev("a", 30, "real"),
            ev("a", 6, "forged", request_id="forged", token_count=1),
        ),
        unique=[("a", "real")],
        duplicates=[],
        conflicts=[("a", "forged")],
    ),
    "copies after the id's state was cleared": Scenario(
        (
            Watermark(0),
            ev("a", 12, "first"),
            Watermark(73),  # past 72: state cleared
            ev("a", 78, "after-expiry"),  # written again, remembered until 78 + 60 = 138
            ev("a", 78, "right-after"),
            Watermark(100),
            ev("a", 12, "old-time"),  # its event time is long expired, but the id is held
            Watermark(139),  # past 138: cleared again
            ev("a", 78, "after-second-expiry"),
        ),
        unique=[("a", "first"), ("a", "after-expiry"), ("a", "after-second-expiry")],
        duplicates=[("a", "right-after")],
        # Compared with the copy the state holds now (78), not with the first ever (12).
        conflicts=[("a", "old-time")],
    ),
    "three copies": Scenario(
        (
            Watermark(0),
            ev("x", 12, "1"),
            ev("x", 12, "2"),
            Watermark(30),
            ev("x", 12, "3"),
            ev("x", 18, "4"),
        ),
        unique=[("x", "1")],
        duplicates=[("x", "2"), ("x", "3")],
        conflicts=[("x", "4")],
    ),
}


def stream_of(steps) -> TestStream:
    stream = TestStream()
    for step in steps:
        if isinstance(step, Watermark):
            stream = stream.advance_watermark_to(step.seconds)
        else:
            batch = EventBatch("", (step,))
            stream = stream.add_elements([TimestampedValue(batch, seconds(step))])
    return stream.advance_watermark_to_infinity()


def dedupe(strategy: str, clock_s: int = 0, num_shards: int = 4) -> DeduplicateEvents:
    clock = pinned_clock(clock_s) if strategy == "per_key" else None
    return DeduplicateEvents(TTL_S, num_shards, strategy=strategy, clock=clock)


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name, strategy):
    scenario = SCENARIOS[name]
    with streaming_pipeline() as p:
        out = (
            p | stream_of(scenario.steps) | dedupe(strategy, scenario.clock_s, scenario.num_shards)
        )
        assert_that(ids(out.unique, "U"), equal_to(scenario.unique), label="unique")
        assert_that(ids(out[DUPLICATE_TAG], "D"), equal_to(scenario.duplicates), label="duplicates")
        assert_that(ids(out[CONFLICT_TAG], "C"), equal_to(scenario.conflicts), label="conflicts")


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
def test_copies_in_one_batch(strategy):
    """Several copies in one input batch: one is written, the others are duplicates (which
    one, only the sharded strategy orders: see the module docstring)."""
    batch = EventBatch("", (ev("x", 12, "1"), ev("y", 12, "1"), ev("x", 12, "2"), ev("x", 12, "3")))
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(batch, 12)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | dedupe(strategy)
        ids_only = beam.Map(lambda pair: pair[0])
        assert_that(
            ids(out.unique, "U") | "UniqueIds" >> ids_only, equal_to(["x", "y"]), label="unique"
        )
        assert_that(
            ids(out[DUPLICATE_TAG], "D") | "DuplicateIds" >> ids_only,
            equal_to(["x", "x"]),
            label="duplicates",
        )


@pytest.mark.parametrize("strategy", DEDUPE_STRATEGIES)
def test_output_shapes_and_timestamps(strategy):
    """Written events leave in ``EventBatch`` elements stamped with their earliest event time;
    a duplicate or a conflict leaves alone, stamped with its own event time."""
    events = [ev("a", 30, "first"), ev("b", 12, "first"), ev("a", 30, "copy"), ev("a", 42, "c")]
    stream = TestStream().advance_watermark_to(0)
    for e in events:
        stream = stream.add_elements([TimestampedValue(EventBatch("", (e,)), seconds(e))])
    with streaming_pipeline() as p:
        out = p | stream.advance_watermark_to_infinity() | dedupe(strategy)
        assert_that(
            out.unique
            | "Batches"
            >> beam.FlatMap(
                lambda b, t=beam.DoFn.TimestampParam: [
                    (e.event_id, type(b).__name__, float(t) == min(map(seconds, b.events)))
                    for e in b.events
                ]
            ),
            equal_to([("a", "EventBatch", True), ("b", "EventBatch", True)]),
            label="unique batches",
        )
        for tag, stamped in ((DUPLICATE_TAG, 30.0), (CONFLICT_TAG, 42.0)):
            assert_that(
                out[tag]
                | f"Shape {tag}"
                >> beam.Map(lambda e, t=beam.DoFn.TimestampParam: (type(e).__name__, float(t))),
                equal_to([("RedactedEvent", stamped)]),
                label=tag,
            )
