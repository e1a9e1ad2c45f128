"""Embedded sinks: Avro archive and dead letters, DuckDB metrics warehouse, SQLite audit log."""

from __future__ import annotations

import collections
import datetime as dt
import glob
import io
import math
import os
import sqlite3
import subprocess
import sys
import threading
from typing import NamedTuple

import apache_beam as beam
import duckdb
import fastavro
import pytest
import sqlglot
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import PaneInfoTiming

from pipelines import views
from pipelines.io.sinks.batches import GatherForFlush
from pipelines.io.sinks.embedded import warehouse
from pipelines.io.sinks.embedded.audit import (
    WriteAuditLog,
    _Connection,
    create_audit_log,
    insert_audit_records,
    read_audit_log,
)
from pipelines.io.sinks.embedded.warehouse import UpsertMetrics, read_metrics, upsert_metric_rows
from pipelines.io.sinks.files import WriteDeadLetters, WriteRawEvents, avro_record
from schemas.contract import parsed_schema
from tests.factories import redacted_event
from tests.sink_factories import T0, audit_record, dead_letter, metric_row
from tests.support.pipelines import TestPipeline
from transforms import sketches
from transforms.elements import EventBatch, to_record

DAY = dt.date(2026, 1, 27)
NEXT_DAY = DAY + dt.timedelta(days=1)


def _eid(name: str) -> str:
    """Returns a canonical UUID (the archive's event_id is an Avro uuid) that embeds ``name``."""
    return f"00000000-0000-4000-8000-{name.encode().hex():0>12}"


def _streaming_options() -> PipelineOptions:
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    return options


def _read_avro(path: str, schema_name: str) -> list[dict]:
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        assert reader.metadata["avro.codec"] == "snappy"
        records = list(reader)
    for record in records:
        assert fastavro.validate(record, parsed_schema(schema_name), raise_errors=True)
        if schema_name == "redacted_event":
            record["event_id"] = str(record["event_id"])  # fastavro reads uuid as uuid.UUID
    return records


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _part_files(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "**", "part-*.avro"), recursive=True))


def _check_files_written(expected_total: int, max_records: int):
    """Matcher for the (path, count) output: counts match the files, which are all there."""

    def check(actual):
        paths = [path for path, _ in actual]
        assert len(paths) == len(set(paths)), "a file was reported twice"
        assert sum(count for _, count in actual) == expected_total
        for path, count in actual:
            with open(path, "rb") as f:
                assert sum(b.num_records for b in fastavro.block_reader(f)) == count <= max_records

    return check


# --- Avro files ----------------------------------------------------------------------------


def _batch(events) -> EventBatch:
    return EventBatch("", tuple(events))


@pytest.mark.parametrize(
    ("schema_name", "records"),
    [
        ("redacted_event", lambda: _archive_input()),
        (
            "dead_letter",
            lambda: [dead_letter(payload="a", failed_at=T0), dead_letter(payload=None)],
        ),
    ],
)
def test_avro_record_writes_the_same_bytes_as_to_record(schema_name, records):
    """The writer's cheaper conversion leaves tuples as tuples; the files must not change."""
    elements = records()

    def encoded(convert) -> bytes:
        out = io.BytesIO()
        rows = [convert(e) for e in elements]
        fastavro.writer(out, parsed_schema(schema_name), rows, sync_marker=b"s" * 16, strict=True)
        return out.getvalue()

    assert encoded(avro_record) == encoded(to_record)


def test_archive_input_has_the_tuples_avro_record_leaves_uncopied():
    # policy_flags is the tuple field; the byte comparison above is only worth it with one set.
    assert any(e.policy_flags for e in _archive_input())
    assert type(avro_record(_archive_input()[1])["policy_flags"]) is tuple


def test_avro_record_converts_nested_records_like_to_record():
    class Inner(NamedTuple):
        n: int

    class Outer(NamedTuple):
        one: Inner
        many: tuple[Inner, ...]
        flags: tuple[str, ...]

    nested = Outer(Inner(1), (Inner(2),), ("a",))
    assert (
        avro_record(nested)
        == to_record(nested)
        == {
            "one": {"n": 1},
            "many": [{"n": 2}],
            "flags": ["a"],
        }
    )
    flat = Outer(None, (), ("a",))
    assert avro_record(flat) == {"one": None, "many": (), "flags": ("a",)}


def test_write_raw_events_batch_writes_each_batch_as_its_own_files(tmp_path):
    """No shuffle in batch: a partition's records of one batch are files of their own."""
    one, two = _archive_input()[:3], _archive_input()[3:]
    with TestPipeline() as p:
        written = p | beam.Create([_batch(one), _batch(two)]) | WriteRawEvents(str(tmp_path))
        assert_that(
            written | beam.MapTuple(lambda path, count: count),
            equal_to([3, 1, 1, 1]),
            label="RecordsPerFile",
        )


def _archive_input() -> list:
    late = T0 - dt.timedelta(hours=30)  # a day earlier: a late event lands in its own date
    return [
        redacted_event(event_id=_eid("e1"), region="europe-west1"),
        redacted_event(event_id=_eid("e2"), region="europe-west1", policy_flags=("pii_redacted",)),
        redacted_event(event_id=_eid("e3"), region="europe-west1", redaction_counts={"EMAIL": 2}),
        redacted_event(event_id=_eid("e4"), region="us-central1", prompt=None, prompt_tokens=None),
        redacted_event(event_id=_eid("e5"), region="us-central1", event_time=late),
        redacted_event(event_id=_eid("e6"), region="eu/../west"),  # must not climb directories
    ]


def test_write_raw_events_batch_partitions_and_round_trips(tmp_path):
    events = _archive_input()
    with TestPipeline() as p:
        written = (
            p
            | beam.Create([_batch(events)])
            | WriteRawEvents(str(tmp_path), max_records=2, num_shards=1)
        )
        assert_that(written, _check_files_written(len(events), max_records=2))
        # Three events in one partition, at most two per file: that partition has two files.
        counts = written | beam.MapTuple(lambda path, count: count)
        assert_that(counts, equal_to([2, 1, 1, 1, 1]), label="RecordsPerFile")

    by_partition = collections.defaultdict(list)
    for path in _part_files(str(tmp_path)):
        partition = os.path.relpath(os.path.dirname(path), tmp_path)
        by_partition[partition].extend(r["event_id"] for r in _read_avro(path, "redacted_event"))
    assert {k: sorted(v) for k, v in by_partition.items()} == {
        "raw/event_date=2026-01-27/region=europe-west1": [_eid("e1"), _eid("e2"), _eid("e3")],
        "raw/event_date=2026-01-27/region=us-central1": [_eid("e4")],
        "raw/event_date=2026-01-26/region=us-central1": [_eid("e5")],
        "raw/event_date=2026-01-27/region=eu%2F..%2Fwest": [_eid("e6")],
    }
    assert len(glob.glob(str(tmp_path / "raw/event_date=2026-01-27/region=europe-west1/*"))) == 2
    records = [r for path in _part_files(str(tmp_path)) for r in _read_avro(path, "redacted_event")]
    assert sorted(records, key=lambda r: r["event_id"]) == [to_record(e) for e in events]


def test_write_raw_events_rerun_rewrites_the_same_files(tmp_path):
    events = _archive_input()
    contents = []
    for _ in range(2):
        with TestPipeline() as p:
            _ = p | beam.Create([_batch(events)]) | WriteRawEvents(str(tmp_path), max_records=2)
        contents.append({path: _read_bytes(path) for path in _part_files(str(tmp_path))})
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
        assert_that(written, _check_files_written(len(letters), max_records=10_000))

    by_partition = {
        os.path.relpath(os.path.dirname(path), tmp_path): _read_avro(path, "dead_letter")
        for path in _part_files(str(tmp_path))
    }
    assert sorted(by_partition) == ["dead_letter/dt=2026-01-27", "dead_letter/dt=2026-01-28"]
    stored = sorted(
        (r for records in by_partition.values() for r in records), key=lambda r: r["payload_bytes"]
    )
    expected = sorted((to_record(d) for d in letters), key=lambda r: r["payload_bytes"])
    assert stored == expected  # timestamps compare as instants
    assert {r["payload"] for r in by_partition["dead_letter/dt=2026-01-27"]} == {"a", "b"}


def test_write_raw_events_streaming_flushes_on_processing_time(tmp_path):
    flush_s = 30
    on_time = [redacted_event(event_id=_eid(f"on{i}"), event_time=T0) for i in range(2)]
    hours_late = redacted_event(event_id=_eid("late"), event_time=T0 - dt.timedelta(hours=5))
    last = redacted_event(event_id=_eid("last"), event_time=T0 + dt.timedelta(hours=6))
    stream = (
        TestStream()
        .advance_watermark_to(T0.timestamp())
        .add_elements([window.TimestampedValue(_batch(on_time), T0.timestamp())])
        .advance_processing_time(flush_s + 1)
        # Hours behind the watermark: an event-time window would drop it at the GroupByKey.
        .advance_watermark_to(T0.timestamp() + 6 * 3600)
        .add_elements(
            [window.TimestampedValue(_batch([hours_late]), hours_late.event_time.timestamp())]
        )
        .add_elements([window.TimestampedValue(_batch([last]), last.event_time.timestamp())])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=_streaming_options()) as p:
        written = (
            p
            | stream
            | WriteRawEvents(str(tmp_path), max_records=100, flush_s=flush_s, num_shards=1)
        )
        assert_that(written, _check_files_written(4, max_records=100))

    files = _part_files(str(tmp_path))
    assert {os.path.relpath(os.path.dirname(f), tmp_path) for f in files} == {
        "raw/event_date=2026-01-27/region=europe-west1"
    }
    # One partition, one shard, room for 100: only the processing-time firing can have put the
    # first two events in a file of their own before the rest arrived. (When the DirectRunner
    # fires the later records, in one pane or two, depends on its scheduling.)
    ids_per_file = [sorted(r["event_id"] for r in _read_avro(f, "redacted_event")) for f in files]
    assert sorted(e.event_id for e in on_time) in ids_per_file
    stored = sorted((r for f in files for r in _read_avro(f, "redacted_event")), key=str)
    assert sorted((to_record(e) for e in [*on_time, hours_late, last]), key=str) == stored


def test_write_raw_events_streaming_cuts_by_record_count(tmp_path):
    events = [redacted_event(event_id=_eid(f"e{i:02d}"), event_time=T0) for i in range(7)]
    stream = (
        TestStream()
        .advance_watermark_to(T0.timestamp())
        .add_elements([window.TimestampedValue(_batch(events[:4]), T0.timestamp())])
        .add_elements([window.TimestampedValue(_batch(events[4:]), T0.timestamp())])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=_streaming_options()) as p:
        written = p | stream | WriteRawEvents(str(tmp_path), max_records=3, num_shards=1)
        assert_that(written, _check_files_written(len(events), max_records=3))
    stored = [
        r["event_id"] for f in _part_files(str(tmp_path)) for r in _read_avro(f, "redacted_event")
    ]
    assert sorted(stored) == [e.event_id for e in events]


# --- DuckDB warehouse ----------------------------------------------------------------------

_COMPARED = ("pane_index", "request_count", "token_sum", "latency_p50_ms", "emitted_at")


def _stored_rows(db_path: str) -> list[dict]:
    frame = read_metrics(db_path).sort_values(["window_start", "model", "region"])
    return [
        {k: row[k] for k in ("model", "region", *_COMPARED)} for row in frame.to_dict("records")
    ]


def _expected(*rows) -> list[dict]:
    return [{k: getattr(r, k) for k in ("model", "region", *_COMPARED)} for r in rows]


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
    assert _stored_rows(db_path) == _expected(pane0)
    run([pane1])
    assert _stored_rows(db_path) == _expected(pane1)
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
    assert _stored_rows(db_path) == _expected(pane1, other_key)


def test_upsert_metrics_rule_within_one_batch_and_on_equal_pane_index(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    warehouse.create_warehouse(db_path)
    first = metric_row(pane_index=2, request_count=5)
    later_same_pane = first._replace(
        request_count=6, emitted_at=first.emitted_at + dt.timedelta(days=1)
    )
    older_pane = first._replace(pane_index=1, request_count=7, emitted_at=first.emitted_at)
    # One statement may touch a key once: the batch is reduced to its newest row first.
    assert upsert_metric_rows(db_path, [first, later_same_pane, older_pane]) == 1
    assert _stored_rows(db_path) == _expected(later_same_pane)
    upsert_metric_rows(db_path, [first, older_pane])
    assert _stored_rows(db_path) == _expected(later_same_pane)


def test_backfill_rows_replace_streaming_rows_and_never_the_reverse(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    warehouse.create_warehouse(db_path)
    streaming = metric_row(latencies_ms=(1.0, 2.0), pane_timing="LATE", pane_index=4)
    backfill = metric_row(
        latencies_ms=(1.0, 2.0, 3.0),
        source="backfill",
        emitted_at=streaming.emitted_at + dt.timedelta(days=1),
    )
    upsert_metric_rows(db_path, [streaming])
    # A backfill row (pane 0) replaces a streaming row whatever its pane index...
    upsert_metric_rows(db_path, [backfill])
    assert _stored_rows(db_path) == _expected(backfill)
    # ...and a streaming pane arriving later (a late pane, a restarted job) cannot roll it back.
    later_pane = streaming._replace(
        pane_index=9, request_count=4, emitted_at=backfill.emitted_at + dt.timedelta(hours=1)
    )
    upsert_metric_rows(db_path, [later_pane])
    assert _stored_rows(db_path) == _expected(backfill)
    # Within one batch the same rule picks the row (a batch may touch a key once).
    assert warehouse.latest_panes([later_pane, backfill, streaming]) == [backfill]
    # Re-running the backfill with the same content changes nothing, emitted_at included.
    rerun = backfill._replace(emitted_at=backfill.emitted_at + dt.timedelta(days=1))
    upsert_metric_rows(db_path, [rerun])
    assert _stored_rows(db_path) == _expected(backfill)
    # A backfill with a new price table recomputes the cost: the newer row wins.
    repriced = rerun._replace(estimated_cost_usd=9.5, price_table_version="test-2")
    upsert_metric_rows(db_path, [repriced])
    stored = read_metrics(db_path).iloc[0]
    assert (stored["estimated_cost_usd"], stored["price_table_version"], stored["source"]) == (
        9.5,
        "test-2",
        "backfill",
    )
    assert stored["emitted_at"] == repriced.emitted_at


def test_an_existing_warehouse_gets_the_new_columns(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    new_columns = ("source", "unsplit_token_sum", "estimated_cost_usd", "price_table_version")
    old_ddl = "\n".join(  # the table as created before these columns existed
        line
        for line in warehouse.metrics_table_ddl().splitlines()
        if not any(f'"{c}"' in line for c in new_columns)
    )
    old_row = metric_row(pane_index=3)
    with duckdb.connect(db_path) as con:
        con.execute(old_ddl)
        con.register("old", warehouse.metric_rows_to_arrow([old_row]).drop_columns(new_columns))
        con.execute("INSERT INTO metrics_minute SELECT * FROM old")
    warehouse.create_warehouse(db_path)
    warehouse.create_warehouse(db_path)  # idempotent
    stored = read_metrics(db_path)
    assert list(stored.columns)[-4:] == list(new_columns)
    assert stored[list(new_columns)].isna().all(axis=None)  # rows from before: NULL
    # A null source counts as streaming: a newer pane replaces it, and so does a backfill.
    newer = metric_row(pane_index=4, latencies_ms=(1.0, 2.0, 3.0))
    upsert_metric_rows(db_path, [newer])
    assert _stored_rows(db_path) == _expected(newer)
    backfill = metric_row(latencies_ms=(9.0,), source="backfill")
    upsert_metric_rows(db_path, [backfill])
    assert _stored_rows(db_path) == _expected(backfill)
    assert read_metrics(db_path, "metrics_daily")["backfill_window_count"].tolist() == [1]


def test_upsert_metrics_streaming_lands_newest_pane(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    early = metric_row(pane_timing="EARLY", pane_index=0)
    on_time = metric_row(
        latencies_ms=(1.0, 2.0, 3.0), pane_timing="ON_TIME", pane_index=1, is_final=True
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
    with TestPipeline(options=_streaming_options()) as p:
        _ = p | stream | UpsertMetrics(db_path)
    assert _stored_rows(db_path) == _expected(on_time)


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
    p = TestPipeline(options=_streaming_options())
    _ = p | _trickled_stream(rows, later) | UpsertMetrics(db_path, flush_s=20)
    assert 1 <= _flushes_of(p, "flushes") <= 2
    assert sorted(r["model"] for r in _stored_rows(db_path)) == sorted(
        r.model for r in [*rows, later]
    )


def test_upsert_waits_for_a_competing_writer_process(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    warehouse.create_warehouse(db_path)
    # Another process holds the database open (DuckDB's file lock) until told to let go.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys\n"
            f"con = duckdb.connect({db_path!r})\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "con.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    first_retry = threading.Event()
    outcome = []
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(duckdb.IOException, match="lock"):
            upsert_metric_rows(db_path, [metric_row()], max_attempts=1)  # bounded: gives up

        writer = threading.Thread(
            target=lambda: outcome.append(
                upsert_metric_rows(db_path, [metric_row()], on_retry=first_retry.set)
            )
        )
        writer.start()
        assert first_retry.wait(timeout=30), "the writer never met the lock"
    finally:
        holder.communicate("release\n", timeout=30)  # the lock goes with the process
    writer.join(timeout=60)
    assert outcome == [1]
    assert _stored_rows(db_path) == _expected(metric_row())


def _view_example() -> list:
    late_night = T0.replace(hour=23, minute=59)  # 23:59 UTC, already the next day in Tokyo
    next_day = T0 + dt.timedelta(days=1)
    return [
        metric_row(latencies_ms=(10.0, 20.0, 30.0), policy_flag_counts={"pii_redacted": 1}),
        metric_row(
            window_start=late_night,
            latencies_ms=(0.0, 40.0, 50.0, 1000.0),
            token_sum=1000,
            policy_flag_counts={"pii_redacted": 2, "jailbreak_suspected": 1},
            emitted_at=late_night + dt.timedelta(seconds=75, microseconds=500_000),
            pane_timing="LATE",
            pane_index=2,
        ),
        metric_row(
            region="us-central1", latencies_ms=(5.0,), policy_flag_counts={}, source="backfill"
        ),
        metric_row(window_start=next_day, latencies_ms=(7.0, 8.0)),
        metric_row(model="other-model", latencies_ms=(500.0,), estimated_cost_usd=None),
    ]


def _quantiles(rows) -> tuple[float, ...]:
    merged = sketches.new_latency_counts()
    for row in rows:
        sketches.merge_latency_counts(merged, sketches.from_latency_bins(row.latency_sketch_bins))
    return sketches.latency_quantiles(merged, (0.5, 0.95, 0.99))


def test_daily_views_on_a_hand_computed_example(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    rows = _view_example()
    warehouse.create_warehouse(db_path)
    upsert_metric_rows(db_path, rows)
    main_rows, late_row, us_row, next_day_row, other_model_row = rows

    daily = read_metrics(db_path, "metrics_daily").sort_values(["day", "model", "region"])
    assert [
        (
            r["day"].date(),
            r["model"],
            r["region"],
            r["window_count"],
            r["request_count"],
            r["token_sum"],
            r["prompt_token_sum"],
            r["completion_token_sum"],
            None if math.isnan(r["estimated_cost_usd"]) else r["estimated_cost_usd"],
            r["unpriced_window_count"],
            r["backfill_window_count"],
        )
        for r in daily.to_dict("records")
    ] == [
        (DAY, "gemini-2.5-pro", "europe-west1", 2, 7, 900 + 1000, 1400, 700, 0.75 + 1.0, 0, 0),
        (DAY, "gemini-2.5-pro", "us-central1", 1, 1, 300, 200, 100, 0.25, 0, 1),
        (DAY, "other-model", "europe-west1", 1, 1, 300, 200, 100, None, 1, 0),
        (NEXT_DAY, "gemini-2.5-pro", "europe-west1", 1, 2, 600, 400, 200, 0.5, 0, 0),
    ]
    first = daily.iloc[0]
    expected = _quantiles([main_rows, late_row])
    assert (first["latency_p50_ms"], first["latency_p95_ms"], first["latency_p99_ms"]) == (
        pytest.approx(expected, rel=1e-12)
    )
    # Hand check, 7 values (0, 10, 20, 30, 40, 50, 1000): p50 has rank 3 (30 ms) and p99 rank
    # 0.99 * 6 = 5.94, i.e. the 6th value (50 ms), each within 1%.
    assert first["latency_p50_ms"] == pytest.approx(30.0, rel=0.01)
    assert first["latency_p99_ms"] == pytest.approx(50.0, rel=0.01)
    assert daily.iloc[1]["latency_p50_ms"] == pytest.approx(_quantiles([us_row])[0], rel=1e-12)

    per_model = read_metrics(db_path, "latency_percentiles_daily").sort_values(["day", "model"])
    model_day = per_model.iloc[0]
    assert (model_day["model"], model_day["request_count"]) == ("gemini-2.5-pro", 8)
    assert (
        model_day["latency_p50_ms"],
        model_day["latency_p95_ms"],
        model_day["latency_p99_ms"],
    ) == pytest.approx(_quantiles([main_rows, late_row, us_row]), rel=1e-12)
    assert per_model.iloc[2]["latency_p50_ms"] == pytest.approx(
        _quantiles([next_day_row])[0], rel=1e-12
    )
    assert per_model.iloc[1]["latency_p50_ms"] == pytest.approx(
        _quantiles([other_model_row])[0], rel=1e-12
    )

    rates = read_metrics(db_path, "policy_flag_rates_daily").sort_values(["day", "policy_flag"])
    assert [
        (
            r["day"].date(),
            r["model"],
            r["policy_flag"],
            r["flag_count"],
            r["request_count"],
            r["flag_rate"],
        )
        for r in rates.to_dict("records")
    ] == [
        (DAY, "gemini-2.5-pro", "jailbreak_suspected", 1, 8, 1 / 8),
        (DAY, "gemini-2.5-pro", "pii_redacted", 3, 8, 3 / 8),
    ]

    freshness = read_metrics(db_path, "freshness").sort_values(["window_start", "region"])
    late = freshness[freshness["pane_timing"] == "LATE"].iloc[0]
    assert (late["freshness_s"], late["pane_index"], late["source"]) == (15.5, 2, "streaming")
    assert sorted(freshness["source"]) == ["backfill"] + ["streaming"] * 4
    assert set(freshness["freshness_s"]) == {5.0, 15.5}

    # The views bucket days in UTC whatever the session time zone is.
    with duckdb.connect(db_path) as con:
        con.execute("SET TimeZone = 'Asia/Tokyo'")
        days = con.sql("SELECT DISTINCT CAST(day AS VARCHAR) FROM metrics_daily ORDER BY 1")
        assert days.fetchall() == [("2026-01-27",), ("2026-01-28",)]


def test_view_sql_is_one_bigquery_definition_per_view():
    for name in views.VIEW_NAMES:
        bigquery = views.bigquery_view_sql(name, "my-project.genai")
        assert "{dataset}" not in bigquery
        assert "`my-project.genai.metrics_minute`" in bigquery
        assert f"`my-project.genai.{name}`" in bigquery
        sqlglot.parse_one(bigquery, read="bigquery")  # valid BigQuery syntax
        assert views.duckdb_view_sql(name).startswith(f'CREATE OR REPLACE VIEW "{name}"')
    with pytest.raises(ValueError, match="unknown view"):
        views.bigquery_view_sql("nope", "ds")


def test_quantiles_of_an_empty_day_are_null(tmp_path):
    db_path = str(tmp_path / "metrics.duckdb")
    warehouse.create_warehouse(db_path)
    upsert_metric_rows(db_path, [metric_row(latencies_ms=(), latency_sketch_bins=())])
    daily = read_metrics(db_path, "metrics_daily").iloc[0]
    assert daily["request_count"] == 0
    assert math.isnan(daily["latency_p50_ms"])
    assert warehouse.latest_panes([]) == []


# --- SQLite audit log ----------------------------------------------------------------------


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
        written._replace(audit_id="b" * 64),  # a different id for the same (event_id, outcome)
    ]


def test_write_audit_log_is_idempotent(tmp_path):
    db_path = str(tmp_path / "audit.sqlite")
    records = _audit_input()
    for _ in range(2):
        with TestPipeline() as p:
            _ = p | beam.Create(records) | WriteAuditLog(db_path)
        rows = read_audit_log(db_path).to_dict("records")
        assert len(rows) == 3
    by_outcome = {r["outcome"]: r for r in rows}
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
    }
    dead = by_outcome["dead_lettered"]
    assert (dead["event_id"], dead["dead_letter_id"], dead["redaction_counts"]) == (
        None,
        "dl-1",
        "{}",
    )
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_audit_flushes_share_a_connection_and_retry_a_lock_conflict(tmp_path):
    db_path = str(tmp_path / "audit.sqlite")
    create_audit_log(db_path)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    conflicts = []

    def release_after_first_conflict():
        conflicts.append(1)
        holder.execute("COMMIT")

    connection = _Connection(db_path, busy_timeout_s=0)
    inserted = insert_audit_records(
        db_path,
        [audit_record(event_id="evt-a")],
        connection=connection,
        first_backoff_s=0.01,
        on_retry=release_after_first_conflict,
    )
    assert (inserted, len(conflicts)) == (1, 1)  # retried after the conflict
    again = insert_audit_records(db_path, [audit_record(event_id="evt-b")], connection=connection)
    assert again == 1
    connection.close()
    holder.close()
    assert sorted(read_audit_log(db_path)["event_id"]) == ["evt-a", "evt-b"]


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
    with TestPipeline(options=_streaming_options()) as p:
        _ = p | stream | WriteAuditLog(db_path, max_buffered_rows=1)
    assert sorted(read_audit_log(db_path)["event_id"]) == ["evt-0", "evt-1", "evt-2"]


def test_write_audit_log_streaming_gathered_records_all_land(tmp_path):
    # As test_upsert_metrics_streaming_gathered_rows_all_land, for the audit log's commits.
    db_path = str(tmp_path / "audit.sqlite")
    records = [audit_record(event_id=f"evt-{i}") for i in range(5)]
    later = audit_record(event_id="evt-later")
    p = TestPipeline(options=_streaming_options())
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
    with TestPipeline(options=_streaming_options()) as p:
        seen = (
            p
            | stream
            | beam.WindowInto(window.FixedWindows(60))
            | GatherForFlush(flush_s=10)
            | beam.ParDo(_FlushPane())
        )
        assert_that(seen, equal_to([(r.event_id, True, True) for r in records]))


def test_write_audit_log_rejects_a_flush_under_a_second():
    with pytest.raises(ValueError, match="flush_s"):
        WriteAuditLog("audit.sqlite", flush_s=0)


# --- several worker processes --------------------------------------------------------------


def test_sinks_with_two_worker_processes(tmp_path):
    """Batch on the FnApiRunner with two worker processes flushing to the same files."""
    db_path, audit_path = str(tmp_path / "metrics.duckdb"), str(tmp_path / "audit.sqlite")
    events = [
        redacted_event(event_id=_eid(f"m{i:03d}"), region=("us", "eu")[i % 2]) for i in range(60)
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
            | "Events" >> beam.Create([_batch(events[:30]), _batch(events[30:])])
            | WriteRawEvents(str(tmp_path / "out"))
        )
        assert_that(written, _check_files_written(len(events), max_records=10_000))
        _ = p | "Panes" >> beam.Create(panes) | UpsertMetrics(db_path, max_buffered_rows=7)
        _ = p | "Audit" >> beam.Create(audits + audits) | WriteAuditLog(audit_path)

    stored = [
        r["event_id"]
        for f in _part_files(str(tmp_path / "out"))
        for r in _read_avro(f, "redacted_event")
    ]
    assert sorted(stored) == sorted(e.event_id for e in events)
    assert sorted(_stored_rows(db_path), key=lambda r: r["request_count"]) == _expected(*newest)
    assert sorted(read_audit_log(audit_path)["event_id"]) == sorted(e.event_id for e in events)


def test_join_parts_of_an_empty_pane_is_an_empty_batch():
    # Streaming panes can fire empty (batch_windowing); joining one must not fail the bundle.
    from pipelines.io.sinks.files import _join_parts

    key = ("raw/event_date=2026-01-27/region=us", 0)
    assert _join_parts(key, []) == (key, EventBatch("", ()))
    event = redacted_event(event_id=_eid("one"))
    assert _join_parts(key, [EventBatch("s", (event,)), EventBatch("t", ())]) == (
        key,
        EventBatch("s", (event,)),
    )
