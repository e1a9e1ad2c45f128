"""The msgpack coders of the typed elements (transforms.coders) in a pipeline: typed elements
go through a shuffle unchanged. The coders on their own: ``tests/functions/test_coders.py``."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from tests.support.factories import redacted_event
from tests.support.pipelines import TestPipeline
from transforms.elements import RedactedEvent


def test_typed_elements_survive_a_group_by_key():
    events = [
        redacted_event(event_id=f"e{i}", redaction_counts={"IP_ADDRESS": i}) for i in range(5)
    ]
    with TestPipeline() as p:
        grouped = (
            p
            | beam.Create(events)
            | beam.Map(lambda e: (len(e.event_id), e)).with_output_types(tuple[int, RedactedEvent])
            | beam.GroupByKey()
            | beam.FlatMap(lambda kv: kv[1])
        )
        assert_that(grouped, equal_to(events))
