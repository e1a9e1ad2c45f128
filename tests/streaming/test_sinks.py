"""Embedded sinks on unbounded input (TestStream): the raw archive flushed on processing time
and cut by record count, the newest metric pane landing, the audit log, rows gathered for a
flush, and GatherForFlush's trigger panes."""

from __future__ import annotations

import datetime as dt
import os

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import PaneInfoTiming

from pipelines.io.sinks.batches import GatherForFlush
from pipelines.io.sinks.embedded.audit import WriteAuditLog, read_audit_log
from pipelines.io.sinks.embedded.warehouse import UpsertMetrics
from pipelines.io.sinks.files import WriteRawEvents
from tests.support import sinks
from tests.support.factories import redacted_event
from tests.support.pipelines import TestPipeline, streaming_options
from tests.support.sink_factories import T0, audit_record, metric_row
from transforms.elements import IngestionBin, to_record


def test_write_raw_events_streaming_flushes_on_processing_time(tmp_path):
    flush_s = 30
    on_time = [redacted_event(event_id=sinks.eid(f"on{i}"), event_time=T0) for i in range(2)]
    hours_late = redacted_event(event_id=sinks.eid("late"), event_time=T0 - dt.timedelta(hours=5))
    last = redacted_event(event_id=sinks.eid("last"), event_time=T0 + dt.timedelta(hours=6))
    stream = (
        TestStream()
        .advance_watermark_to(T0.timestamp())
        .add_elements([window.TimestampedValue(sinks.event_batch(on_time), T0.timestamp())])
        .advance_processing_time(flush_s + 1)
        # Hours behind the watermark: an event-time window would drop it at the GroupByKey.
        .advance_watermark_to(T0.timestamp() + 6 * 3600)
        .add_elements(
            [
                window.TimestampedValue(
                    sinks.event_batch([hours_late]), hours_late.event_time.timestamp()
                )
            ]
        )
        .add_elements(
            [window.TimestampedValue(sinks.event_batch([last]), last.event_time.timestamp())]
        )
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        written = (
            p
            | stream
            | WriteRawEvents(str(tmp_path), max_records=100, flush_s=flush_s, num_shards=1)
        ).files
        assert_that(written, sinks.check_files_written(4, max_records=100))

    files = sinks.part_files(str(tmp_path))
    assert {os.path.relpath(os.path.dirname(f), tmp_path) for f in files} == {
        "raw/event_date=2026-01-27/region=europe-west1"
    }
    # One partition, one shard, room for 100: only the processing-time firing can have put the
    # first two events in a file of their own before the rest arrived. (When the DirectRunner
    # fires the later records, in one pane or two, depends on its scheduling.)
    ids_per_file = [
        sorted(r["event_id"] for r in sinks.read_avro(f, "redacted_event")) for f in files
    ]
    assert sorted(e.event_id for e in on_time) in ids_per_file
    stored = sorted((r for f in files for r in sinks.read_avro(f, "redacted_event")), key=str)
    assert sorted((to_record(e) for e in [*on_time, hours_late, last]), key=str) == stored


def test_write_raw_events_streaming_cuts_by_record_count(tmp_path):
    events = [redacted_event(event_id=sinks.eid(f"e{i:02d}"), event_time=T0) for i in range(7)]
    stream = (
        TestStream()
        .advance_watermark_to(T0.timestamp())
        .add_elements([window.TimestampedValue(sinks.event_batch(events[:4]), T0.timestamp())])
        .add_elements([window.TimestampedValue(sinks.event_batch(events[4:]), T0.timestamp())])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        written = (p | stream | WriteRawEvents(str(tmp_path), max_records=3, num_shards=1)).files
        assert_that(written, sinks.check_files_written(len(events), max_records=3))
    stored = [
        r["event_id"]
        for f in sinks.part_files(str(tmp_path))
        for r in sinks.read_avro(f, "redacted_event")
    ]
    assert sorted(stored) == [e.event_id for e in events]


def _commit_time() -> dt.datetime:
    return T0 + dt.timedelta(seconds=100)


def test_upsert_metrics_streaming_lands_newest_pane(tmp_path):
    """The newest pane lands whatever the order, and the sink emits the freshness of each event
    once, when the first row counting it is committed (the clock is fixed here)."""
    db_path = str(tmp_path / "metrics.duckdb")
    t0 = int(T0.timestamp())
    early = metric_row(
        pane_timing="EARLY", pane_index=0, ingestion_counts=(IngestionBin(t0 + 5, 2),)
    )
    on_time = metric_row(
        latencies_ms=(1.0, 2.0, 3.0),
        pane_timing="ON_TIME",
        pane_index=1,
        is_final=True,
        emitted_at=early.emitted_at + dt.timedelta(seconds=30),
        ingestion_counts=(IngestionBin(t0 + 5, 2), IngestionBin(t0 + 62, 1)),
    )
    stream = (
        TestStream()
        .advance_watermark_to(T0.timestamp())
        .add_elements([window.TimestampedValue(early, T0.timestamp())])
        .advance_processing_time(10)
        .add_elements([window.TimestampedValue(on_time, T0.timestamp() + 59)])
        .advance_processing_time(10)
        .add_elements([window.TimestampedValue(early, T0.timestamp())])  # a replayed old pane
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        visible = (p | stream | UpsertMetrics(db_path, clock=_commit_time)).learnt
        # Two events ingested at T0+5 s and one at T0+62 s, committed at T0+100 s; the replayed
        # early pane adds nothing (whether the first two panes were committed together or not).
        assert_that(visible, equal_to([(95, 2), (38, 1)]), label="CheckFreshness")
    assert sinks.stored_rows(db_path) == sinks.expected_rows(on_time)


def _trickled_stream(items: list, later) -> TestStream:
    """``items`` one per second of processing time, then ``later`` 30 s after."""
    stream = TestStream().advance_watermark_to(T0.timestamp())
    for item in items:
        stream = stream.add_elements([window.TimestampedValue(item, T0.timestamp())])
        stream = stream.advance_processing_time(1)
    return (
        stream.advance_processing_time(30)
        .add_elements([window.TimestampedValue(later, T0.timestamp())])
        .advance_watermark_to_infinity()
    )


def _flushes_of(pipeline: beam.Pipeline, counter: str) -> int:
    result = pipeline.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_name(counter))["counters"]
    return sum(c.committed for c in found)


def test_upsert_metrics_streaming_gathered_rows_all_land(tmp_path):
    # Unbounded rows are gathered for flush_s of processing time, then upserted together: every
    # row lands, in at most one flush per pane (one for the rows within flush_s, one for the
    # later row or both together: the DirectRunner's scheduling of the processing-time firing
    # decides). It cannot tell gathering from a flush per bundle: on the DirectRunner this
    # TestStream comes in one bundle either way. The saving shows in the streaming benchmark.
    db_path = str(tmp_path / "metrics.duckdb")
    rows = [metric_row(model=f"model-{i}") for i in range(5)]
    later = metric_row(model="model-later")
    p = TestPipeline(options=streaming_options())
    _ = p | _trickled_stream(rows, later) | UpsertMetrics(db_path, flush_s=20)
    assert 1 <= _flushes_of(p, "flushes") <= 2
    assert sorted(r["model"] for r in sinks.stored_rows(db_path)) == sorted(
        r.model for r in [*rows, later]
    )


def test_write_audit_log_streaming(tmp_path):
    db_path = str(tmp_path / "audit.sqlite")
    records = [audit_record(event_id=f"evt-{i}") for i in range(3)]
    stream = (
        TestStream()
        .advance_watermark_to(T0.timestamp())
        .add_elements([window.TimestampedValue(r, T0.timestamp()) for r in records[:2]])
        .advance_processing_time(5)
        .add_elements([window.TimestampedValue(r, T0.timestamp()) for r in records[1:]])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming_options()) as p:
        _ = p | stream | WriteAuditLog(db_path, max_buffered_rows=1)
    assert sorted(read_audit_log(db_path)["event_id"]) == ["evt-0", "evt-1", "evt-2"]


def test_write_audit_log_streaming_gathered_records_all_land(tmp_path):
    # As test_upsert_metrics_streaming_gathered_rows_all_land, for the audit log's commits.
    db_path = str(tmp_path / "audit.sqlite")
    records = [audit_record(event_id=f"evt-{i}") for i in range(5)]
    later = audit_record(event_id="evt-later")
    p = TestPipeline(options=streaming_options())
    _ = p | _trickled_stream(records, later) | WriteAuditLog(db_path, flush_s=20)
    assert 1 <= _flushes_of(p, "flushes") <= 2
    assert sorted(read_audit_log(db_path)["event_id"]) == sorted(
        r.event_id for r in [*records, later]
    )


class _FlushPane(beam.DoFn):
    """(event id, whether in the global window, whether from an EARLY or ON_TIME firing)."""

    def process(self, record, pane=beam.DoFn.PaneInfoParam, w=beam.DoFn.WindowParam):
        fired = pane.timing in (PaneInfoTiming.EARLY, PaneInfoTiming.ON_TIME)
        yield record.event_id, isinstance(w, window.GlobalWindow), fired


def test_gather_for_flush_emits_every_record_once_from_trigger_panes():
    # Records in event-time windows come out once each, in the global window, from the firings
    # of the flush trigger (EARLY within flush_s, ON_TIME for what is left at the end).
    records = [audit_record(event_id=f"evt-{i}") for i in range(4)]
    stream = TestStream().advance_watermark_to(T0.timestamp())
    for record in records:
        stream = stream.add_elements([window.TimestampedValue(record, T0.timestamp())])
        stream = stream.advance_processing_time(1)
    stream = stream.advance_processing_time(30).advance_watermark_to_infinity()
    with TestPipeline(options=streaming_options()) as p:
        seen = (
            p
            | stream
            | beam.WindowInto(window.FixedWindows(60))
            | GatherForFlush(flush_s=10)
            | beam.ParDo(_FlushPane())
        )
        assert_that(seen, equal_to([(r.event_id, True, True) for r in records]))
