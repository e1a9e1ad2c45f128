"""Schema evolution through the core (AnalyzeEvents on beam.Create): minor versions and the
fields of contract 1.1 archived, unknown fields counted by name per metrics window and per
counter, another major dead-lettered with its major named, and counted."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from tests.support.analyze import CONFIG
from tests.support.core_inputs import event_id, raw
from tests.support.pipelines import TestPipeline
from transforms.analyze import AnalyzeEvents

INPUTS = [
    raw(1, schema_version="1.0"),
    raw(2, schema_version="1.1", ttft_ms=95, cached_tokens=4, reasoning_tokens=2, tenant_id="t-7"),
    raw(3, schema_version="1.4", service_tier="flex", **{"Route Hint": "x"}),
    raw(4, service_tier="auto"),
    raw(5, schema_version=2),
    raw(6, schema_version="2.1"),
]


def test_versions_new_fields_and_drift_through_the_core():
    p = TestPipeline()
    out = p | beam.Create(INPUTS) | AnalyzeEvents(CONFIG)
    archived = out.events | "Events" >> beam.FlatMap(lambda batch: batch.events)
    assert_that(
        archived
        | "Archived"
        >> beam.Map(
            lambda e: (
                e.event_id,
                e.schema_version,
                e.ttft_ms,
                e.cached_tokens,
                e.reasoning_tokens,
                e.tenant_id,
                tuple(e.unknown_fields),
                e.unknown_field_count,
            )
        ),
        equal_to(
            [
                (event_id(1), "1.0", None, None, None, None, (), 0),
                (event_id(2), "1.1", 95.0, 4, 2, "t-7", (), 0),
                (event_id(3), "1.4", None, None, None, None, ("other", "service_tier"), 2),
                (event_id(4), "1", None, None, None, None, ("service_tier",), 1),
            ]
        ),
        label="archived",
    )
    assert_that(
        out.dead_letters | "Reasons" >> beam.Map(lambda d: (d.reason, d.event_id)),
        equal_to(
            [
                ("unsupported_schema_version:2", event_id(5)),
                ("unsupported_schema_version:2", event_id(6)),
            ]
        ),
        label="dead letters",
    )
    # One window (every event at T0 + 5 s): the drift of the written events, by name.
    assert_that(
        out.metrics | "Drift" >> beam.Map(lambda row: (row.request_count, row.schema_drift_counts)),
        equal_to([(4, {"other": 1, "service_tier": 2})]),
        label="drift per window",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("genai"))["counters"]
    }
    assert counters["schema_drift_field.service_tier"] == 2
    assert counters["schema_drift_field.other"] == 1
    assert counters["schema_drift_fields_dropped"] == 3
    assert counters["dead_letter.unsupported_schema_version:2"] == 2
    assert not [name for name in counters if "Route" in name]  # a name outside the grammar
