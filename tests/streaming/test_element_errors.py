"""In streaming a line that failed its bundle was retried forever, stopping the pipeline: each
line that did is now its own dead letter, and the stream goes on to the valid event after it."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.support.analyze import CONFIG
from tests.support.core_inputs import T0_S
from tests.support.hostile import STOPPED_A_RUN, gateway_event
from tests.support.pipelines import TestPipeline, streaming_options
from transforms.analyze import AnalyzeEvents


def test_the_lines_that_stopped_a_stream_are_dead_letters_and_it_goes_on():
    valid = gateway_event()
    lines = [json.dumps(doc).encode() for doc, _ in STOPPED_A_RUN.values()]
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([TimestampedValue(line, T0_S) for line in lines])
        .add_elements([TimestampedValue(json.dumps(valid).encode(), T0_S)])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream | AnalyzeEvents(CONFIG)
        assert_that(
            out.dead_letters | beam.Map(lambda d: d.reason),
            equal_to([reason for _, reason in STOPPED_A_RUN.values()]),
            label="DeadLetters",
        )
        assert_that(
            out.events | beam.FlatMap(lambda b: [e.event_id for e in b.events]),
            equal_to([valid["event_id"]]),
            label="Written",
        )
        assert_that(
            out.metrics | beam.Map(lambda r: (r.request_count, r.token_sum)),
            equal_to([(1, 10)]),
            label="Metrics",
        )
