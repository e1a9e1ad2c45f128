"""No element can fail a bundle, through the composites: the dedupe's and the aggregation's dead
letters, and the sinks taking out only the records they cannot encode (the rest is written, the
culprits become ``internal_error:<step>`` dead letters stored with the others)."""

from __future__ import annotations

import glob
import json
import uuid

import apache_beam as beam
import fastavro
from apache_beam.testing.util import assert_that, equal_to

from pipelines.io.sinks.batches import WriteInBatches
from pipelines.io.sinks.embedded import WriteEmbedded
from tests.support.aggregate import PRICES, stamped
from tests.support.factories import redacted_event
from tests.support.gcp_path import FAST, RecordingSink, audit_records
from tests.support.pipelines import TestPipeline
from tests.support.sink_factories import audit_record, dead_letter, metric_row
from transforms.aggregate import INT64_MAX, AggregateMetrics
from transforms.analyze import CoreOutputs
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedupe import DeduplicateEvents
from transforms.elements import EventBatch


def _id(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def test_the_aggregation_leaves_out_what_it_cannot_count_and_saturates_sums():
    events = [
        redacted_event(event_id=_id(1), token_count=INT64_MAX, prompt_tokens=None),
        redacted_event(event_id=_id(2), token_count=INT64_MAX, prompt_tokens=None),
        redacted_event(event_id=_id(3), latency_ms=1.79e308),  # archived before the bounds
    ]
    with TestPipeline() as p:
        out = p | beam.Create(events) | beam.Map(stamped) | AggregateMetrics(prices=PRICES)
        assert_that(
            out.rows | "Sums" >> beam.Map(lambda r: (r.request_count, r.token_sum)),
            equal_to([(2, INT64_MAX)]),
            label="Rows",
        )
        assert_that(
            out.dead_letters | "Left" >> beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to([("internal_error:aggregate", _id(3))]),
            label="LeftOut",
        )


def test_the_dedupe_dead_letters_what_it_cannot_key_in_every_mode():
    good = redacted_event(event_id=_id(1))
    broken = redacted_event(event_id=_id(2))._replace(
        event_time=good.event_time.replace(tzinfo=None)
    )
    with TestPipeline() as p:
        out = p | beam.Create([EventBatch("in", (good, broken))]) | DeduplicateEvents(num_shards=2)
        assert_that(
            out.unique | beam.FlatMap(lambda b: [e.event_id for e in b.events]),
            equal_to([_id(1)]),
            label="Unique",
        )
        assert_that(
            out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to([("internal_error:dedupe", _id(2))]),
            label="DeadLetters",
        )


def test_the_embedded_sinks_write_the_rest_and_dead_letter_the_culprits(tmp_path):
    events = [redacted_event(event_id=_id(n)) for n in range(1, 4)]
    # 2**63: no Avro long or BIGINT holds it (the elements' coder takes up to 2**64 - 1).
    events[1] = events[1]._replace(token_count=2**63)
    rows = [metric_row(), metric_row(model="other", token_sum=2**63)]
    # Every audit record the elements' coder carries fits SQLite (texts UTF-8 cannot encode do
    # not even pass between steps): tests/functions/test_element_errors.py has those.
    audits = [audit_record(event_id=_id(1))]
    letters = [dead_letter()]
    root = str(tmp_path)
    with TestPipeline() as p:
        core = CoreOutputs(
            events=p | "Events" >> beam.Create([EventBatch("in", tuple(events))]),
            duplicates=p | "Duplicates" >> beam.Create([]),
            metrics=p | "Metrics" >> beam.Create(rows),
            audit=(p | "Audit" >> beam.Create(audits),),
            dead_letters=p | "DeadLetters" >> beam.Create(letters),
            metric_dead_letters=p | "LeftOut" >> beam.Create([]),
            usage=p | "Usage" >> beam.Create([]),
            conflicts=p | "Conflicts" >> beam.Create([]),
        )
        sinks = core | WriteEmbedded(root)
        assert_that(
            sinks.sink_dead_letters | beam.Map(lambda d: d.reason),
            equal_to(
                [
                    "internal_error:write_redacted_event",
                    "internal_error:write_metrics_duckdb",
                ]
            ),
        )
    archived = _avro(f"{root}/raw/**/*.avro")
    assert sorted(str(r["event_id"]) for r in archived) == [_id(1), _id(3)]
    stored = {r["reason"]: r for r in _avro(f"{root}/dead_letter/**/*.avro")}
    assert stored["internal_error:write_redacted_event"]["event_id"] == _id(2)
    payload = json.loads(stored["internal_error:write_redacted_event"]["payload"])
    assert payload["token_count"] == 2**63  # the event as an input, to replay once fixed
    assert stored["internal_error:write_metrics_duckdb"]["error_type"] in (
        "OverflowError",
        "ArrowInvalid",
        "ConversionException",
    )


def _avro(pattern):
    records = []
    for path in glob.glob(pattern, recursive=True):
        with open(path, "rb") as handle:
            records += list(fastavro.reader(handle))
    return records


def test_a_batch_sink_writes_the_rest_of_a_batch_a_row_of_it_poisons(request):
    records = [*audit_records(4), audit_record(event_id="bad-1")]
    for mode in ("poison", "refuse_poison"):
        token = f"{request.node.name}-{mode}"
        sink = RecordingSink(token, mode=mode)
        with TestPipeline() as p:
            failed = (
                p | beam.Create(records) | WriteInBatches(sink, id_field="audit_id", retry=FAST)
            )
            assert_that(
                failed | beam.Map(lambda d: (d.reason, d.event_id)),
                equal_to([("internal_error:write_recording", "bad-1")]),
            )
        written = sorted(i for batch in RecordingSink.written[token] for i in batch)
        assert written == sorted(r.audit_id for r in records[:4]), mode


def test_a_usage_row_the_table_cannot_hold_is_a_dead_letter_in_any_window(tmp_path):
    # A bounded input in hourly windows (a reconciliation's usage panes): the row taken out
    # used to be emitted in the global window into a PCollection of interval windows, which
    # failed the bundle (found by make fuzz).
    from tests.support.usage import expected_usage

    fine = expected_usage([redacted_event(event_id=_id(1))], pane_timing="ON_TIME", pane_index=0)
    fine = fine._replace(emitted_at=fine.hour_start)
    too_big = fine._replace(user_key="k-big", token_sum=2**63)
    hour = beam.window.FixedWindows(3600)
    with TestPipeline() as p:
        rows = (
            p
            | beam.Create([fine, too_big])
            | beam.Map(lambda r: beam.window.TimestampedValue(r, r.hour_start.timestamp()))
            | beam.WindowInto(hour)
        )
        core = CoreOutputs(
            events=p | "Events" >> beam.Create([]),
            duplicates=p | "Duplicates" >> beam.Create([]),
            metrics=p | "Metrics" >> beam.Create([]),
            audit=(p | "Audit" >> beam.Create([]),),
            dead_letters=p | "DeadLetters" >> beam.Create([]),
            metric_dead_letters=p | "LeftOut" >> beam.Create([]),
            usage=rows,
            conflicts=p | "Conflicts" >> beam.Create([]),
        )
        sinks = core | WriteEmbedded(str(tmp_path), archive=False)
        assert_that(
            sinks.sink_dead_letters | beam.Map(lambda d: d.reason),
            equal_to(["internal_error:write_usage_duckdb"]),
        )
