"""Embedded sinks in batch pipelines: Avro archive and dead letters (partitions, files, reruns),
the DuckDB metrics upsert, the SQLite audit log, and all of them with two worker processes."""

from __future__ import annotations

import collections
import datetime as dt
import glob
import os
import sqlite3

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines.io.sinks.embedded.audit import WriteAuditLog, read_audit_log
from pipelines.io.sinks.embedded.warehouse import UpsertMetrics, read_metrics
from pipelines.io.sinks.files import WriteDeadLetters, WriteRawEvents
from tests.support.factories import redacted_event
from tests.support.pipelines import TestPipeline
from tests.support.sink_factories import T0, audit_record, dead_letter, metric_row
from tests.support.sinks import (
    archive_input,
    check_files_written,
    eid,
    event_batch,
    expected_rows,
    part_files,
    read_avro,
    stored_rows,
)
from transforms.elements import to_record


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_write_raw_events_batch_writes_each_batch_as_its_own_files(tmp_path):
    """No shuffle in batch: a partition's records of one batch are files of their own."""
    one, two = archive_input()[:3], archive_input()[3:]
    with TestPipeline() as p:
        written = (
            p | beam.Create([event_batch(one), event_batch(two)]) | WriteRawEvents(str(tmp_path))
        ).files
        assert_that(
            written | beam.MapTuple(lambda path, count: count),
            equal_to([3, 1, 1, 1]),
            label="RecordsPerFile",
        )


def test_write_raw_events_batch_partitions_and_round_trips(tmp_path):
    events = archive_input()
    with TestPipeline() as p:
        written = (
            p
            | beam.Create([event_batch(events)])
            | WriteRawEvents(str(tmp_path), max_records=2, num_shards=1)
        ).files
        assert_that(written, check_files_written(len(events), max_records=2))
        # Three events in one partition, at most two per file: that partition has two files.
        counts = written | beam.MapTuple(lambda path, count: count)
        assert_that(counts, equal_to([2, 1, 1, 1, 1]), label="RecordsPerFile")

    by_partition = collections.defaultdict(list)
    for path in part_files(str(tmp_path)):
        partition = os.path.relpath(os.path.dirname(path), tmp_path)
        by_partition[partition].extend(r["event_id"] for r in read_avro(path, "redacted_event"))
    assert {k: sorted(v) for k, v in by_partition.items()} == {
        "raw/event_date=2026-01-27/region=europe-west1": [eid("e1"), eid("e2"), eid("e3")],
        "raw/event_date=2026-01-27/region=us-central1": [eid("e4")],
        "raw/event_date=2026-01-26/region=us-central1": [eid("e5")],
        "raw/event_date=2026-01-27/region=eu%2F..%2Fwest": [eid("e6")],
    }
    assert len(glob.glob(str(tmp_path / "raw/event_date=2026-01-27/region=europe-west1/*"))) == 2
    records = [r for path in part_files(str(tmp_path)) for r in read_avro(path, "redacted_event")]
    assert sorted(records, key=lambda r: r["event_id"]) == [to_record(e) for e in events]


def test_write_raw_events_rerun_rewrites_the_same_files(tmp_path):
    events = archive_input()
    contents = []
    for _ in range(2):
        with TestPipeline() as p:
            _ = (
                p
                | beam.Create([event_batch(events)])
                | WriteRawEvents(str(tmp_path), max_records=2)
            )
        contents.append({path: _read_bytes(path) for path in part_files(str(tmp_path))})
    assert contents[0] == contents[1]
    assert not glob.glob(str(tmp_path / "**" / ".*"), recursive=True)  # no temporary files left


def test_write_dead_letters_partitions_by_utc_failure_date(tmp_path):
    plus_two = dt.timezone(dt.timedelta(hours=2))
    letters = [
        dead_letter(payload="a", failed_at=T0),
        dead_letter(payload="b", failed_at=dt.datetime(2026, 1, 28, 1, 0, tzinfo=plus_two)),
        dead_letter(payload=None, payload_state="omitted", failed_at=T0 + dt.timedelta(days=1)),
    ]
    with TestPipeline() as p:
        written = p | beam.Create(letters) | WriteDeadLetters(str(tmp_path))
        assert_that(written, check_files_written(len(letters), max_records=10_000))

    by_partition = {
        os.path.relpath(os.path.dirname(path), tmp_path): read_avro(path, "dead_letter")
        for path in part_files(str(tmp_path))
    }
    assert sorted(by_partition) == ["dead_letter/dt=2026-01-27", "dead_letter/dt=2026-01-28"]
    stored = sorted(
        (r for records in by_partition.values() for r in records), key=lambda r: r["payload_bytes"]
    )
    expected = sorted((to_record(d) for d in letters), key=lambda r: r["payload_bytes"])
    assert stored == expected  # timestamps compare as instants
    assert {r["payload"] for r in by_partition["dead_letter/dt=2026-01-27"]} == {"a", "b"}


def test_upsert_metrics_keeps_newest_pane_and_ignores_replays(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    pane0 = metric_row(latencies_ms=(100.0,), pane_timing="EARLY", pane_index=0)
    pane1 = metric_row(
        latencies_ms=(100.0, 300.0, 900.0),
        pane_index=1,
        policy_flag_counts={"pii_redacted": 2},
        emitted_at=pane0.emitted_at + dt.timedelta(seconds=30),
    )
    other_key = metric_row(region="us-central1")

    def run(rows):
        with TestPipeline() as p:
            _ = p | beam.Create(rows) | UpsertMetrics(db_path)

    run([pane0])
    assert stored_rows(db_path) == expected_rows(pane0)
    run([pane1])
    assert stored_rows(db_path) == expected_rows(pane1)
    stored = read_metrics(db_path).iloc[0]
    assert [dict(b) for b in stored["latency_sketch_bins"]] == [
        {"index": b.index, "count": b.count} for b in pane1.latency_sketch_bins
    ]
    assert [dict(f) for f in stored["policy_flag_counts"]] == [{"key": "pii_redacted", "value": 2}]
    assert stored["users_hll"] == pane1.users_hll

    before = read_metrics(db_path)
    run([pane0, pane1])  # a replay of everything, old pane included
    assert read_metrics(db_path).equals(before)

    run([other_key])
    assert stored_rows(db_path) == expected_rows(pane1, other_key)


def _audit_input() -> list:
    written = audit_record(event_id="evt-1", outcome="written")
    return [
        written,
        audit_record(event_id="evt-1", outcome="duplicate", event_time=None),
        audit_record(
            event_id=None,
            request_id=None,
            user_key=None,
            outcome="dead_lettered",
            reason="invalid_json",
            dead_letter_id="dl-1",
            audit_id="a" * 64,
            redaction_counts={},
            event_time=None,
        ),
        written,  # the same record twice in one run
        # The same input (audit_id) again, lower in precedence: the written record stays.
        written._replace(outcome="duplicate", recorded_at=written.recorded_at.replace(year=2027)),
        # Another input with the same event and outcome: a record of its own.
        written._replace(audit_id="b" * 64),
    ]


def test_write_audit_log_is_idempotent(tmp_path):
    db_path = str(tmp_path / "audit.sqlite")
    records = _audit_input()
    for _ in range(2):
        with TestPipeline() as p:
            _ = p | beam.Create(records) | WriteAuditLog(db_path)
        rows = read_audit_log(db_path).to_dict("records")
        assert len(rows) == 4
    assert sorted(r["audit_id"] for r in rows if r["outcome"] == "written") == sorted(
        [records[0].audit_id, "b" * 64]
    )
    by_outcome = {r["outcome"]: r for r in rows if r["audit_id"] != "b" * 64}
    assert by_outcome["written"] == {
        "audit_id": records[0].audit_id,
        "event_id": "evt-1",
        "request_id": "req-0001",
        "user_key": "user-key-0001",
        "outcome": "written",
        "reason": None,
        "data_class": "INTERNAL",
        "redaction_counts": '{"EMAIL_ADDRESS":1}',
        "model": "gemini-2.5-pro",
        "region": "europe-west1",
        "event_time": "2026-01-27T10:00:05.000000Z",
        "dead_letter_id": None,
        "recorded_at": "2026-01-27T10:00:07.000000Z",
        "input_id": None,
    }
    dead = by_outcome["dead_lettered"]
    assert (dead["event_id"], dead["dead_letter_id"], dead["redaction_counts"]) == (
        None,
        "dl-1",
        "{}",
    )
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sinks_with_two_worker_processes(tmp_path):
    """Batch on the FnApiRunner with two worker processes flushing to the same files."""
    db_path, audit_path = str(tmp_path / "metrics.duckdb"), str(tmp_path / "audit.sqlite")
    events = [
        redacted_event(event_id=eid(f"m{i:03d}"), region=("us", "eu")[i % 2]) for i in range(60)
    ]
    newest = [
        metric_row(window_start=T0 + dt.timedelta(minutes=i), pane_index=1, request_count=i)
        for i in range(30)
    ]
    # Older panes after the newer ones: whichever process flushes last, the newest must win.
    panes = newest + [r._replace(pane_index=0, request_count=-1) for r in newest]
    audits = [audit_record(event_id=e.event_id) for e in events]
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    with TestPipeline(options=options) as p:
        written = (
            p
            | "Events" >> beam.Create([event_batch(events[:30]), event_batch(events[30:])])
            | WriteRawEvents(str(tmp_path / "out"))
        ).files
        assert_that(written, check_files_written(len(events), max_records=10_000))
        _ = p | "Panes" >> beam.Create(panes) | UpsertMetrics(db_path, max_buffered_rows=7)
        _ = p | "Audit" >> beam.Create(audits + audits) | WriteAuditLog(audit_path)

    stored = [
        r["event_id"]
        for f in part_files(str(tmp_path / "out"))
        for r in read_avro(f, "redacted_event")
    ]
    assert sorted(stored) == sorted(e.event_id for e in events)
    assert sorted(stored_rows(db_path), key=lambda r: r["request_count"]) == expected_rows(*newest)
    assert sorted(read_audit_log(audit_path)["event_id"]) == sorted(e.event_id for e in events)


def _commit_time():
    return T0 + dt.timedelta(seconds=100)


def test_upsert_metrics_counts_freshness_per_event_for_cloud_monitoring(tmp_path):
    from apache_beam.metrics.metric import MetricsFilter

    from transforms.elements import IngestionBin

    t0 = int(T0.timestamp())
    rows = [
        metric_row(ingestion_counts=(IngestionBin(t0 + 10, 2), IngestionBin(t0 - 100, 1))),
        metric_row(region="us-central1", ingestion_counts=(IngestionBin(t0 + 50, 4),)),
    ]
    p = TestPipeline()
    visible = (
        p | beam.Create(rows) | UpsertMetrics(str(tmp_path / "w.duckdb"), clock=_commit_time)
    ).learnt
    assert_that(visible, equal_to([(90, 2), (200, 1), (50, 4)]))
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace("genai"))
    counters = {c.key.metric.name: c.committed for c in found["counters"]}
    assert counters["freshness_events"] == 7
    assert counters["freshness_events_within_60s"] == 4
    assert counters["freshness_events_within_120s"] == 6
    assert counters["freshness_events_within_300s"] == 7
    (distribution,) = [
        d.committed for d in found["distributions"] if d.key.metric.name == "freshness_s"
    ]
    assert (distribution.count, distribution.sum, distribution.min, distribution.max) == (
        7,
        2 * 90 + 200 + 4 * 50,
        50,
        200,
    )
