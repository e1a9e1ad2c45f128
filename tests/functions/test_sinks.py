"""Embedded sinks as plain functions: Avro records, the DuckDB warehouse's upsert rule, columns
and views, the SQLite audit log's connection and validation. In pipelines:
``tests/transforms/test_sinks.py`` and ``tests/streaming/test_sinks.py``."""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import sqlite3
import subprocess
import sys
import threading
from typing import NamedTuple

import duckdb
import fastavro
import pytest
import sqlglot

from pipelines import views
from pipelines.io.sinks.embedded import warehouse
from pipelines.io.sinks.embedded.audit import (
    WriteAuditLog,
    _Connection,
    create_audit_log,
    insert_audit_records,
    read_audit_log,
)
from pipelines.io.sinks.embedded.warehouse import read_metrics, upsert_metric_rows
from pipelines.io.sinks.files import avro_record
from schemas.contract import parsed_schema
from tests.support.factories import redacted_event
from tests.support.sink_factories import T0, audit_record, dead_letter, metric_row
from tests.support.sinks import archive_input, eid, expected_rows, stored_rows
from transforms import sketches
from transforms.elements import EventBatch, to_record

DAY = dt.date(2026, 1, 27)
NEXT_DAY = DAY + dt.timedelta(days=1)


# --- Avro files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_name", "records"),
    [
        ("redacted_event", lambda: archive_input()),
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
    assert any(e.policy_flags for e in archive_input())
    assert type(avro_record(archive_input()[1])["policy_flags"]) is tuple


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


# --- DuckDB warehouse ----------------------------------------------------------------------


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
    assert stored_rows(db_path) == expected_rows(later_same_pane)
    upsert_metric_rows(db_path, [first, older_pane])
    assert stored_rows(db_path) == expected_rows(later_same_pane)


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
    assert stored_rows(db_path) == expected_rows(backfill)
    # ...and a streaming pane arriving later (a late pane, a restarted job) cannot roll it back.
    later_pane = streaming._replace(
        pane_index=9, request_count=4, emitted_at=backfill.emitted_at + dt.timedelta(hours=1)
    )
    upsert_metric_rows(db_path, [later_pane])
    assert stored_rows(db_path) == expected_rows(backfill)
    # Within one batch the same rule picks the row (a batch may touch a key once).
    assert warehouse.latest_panes([later_pane, backfill, streaming]) == [backfill]
    # Re-running the backfill with the same content changes nothing, emitted_at included.
    rerun = backfill._replace(emitted_at=backfill.emitted_at + dt.timedelta(days=1))
    upsert_metric_rows(db_path, [rerun])
    assert stored_rows(db_path) == expected_rows(backfill)
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
    new_columns = (
        "source",
        "unsplit_token_sum",
        "estimated_cost_usd",
        "price_table_version",
        "latest_event_time",
        "ingestion_counts",
        "freshness_counts",
    )
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
    assert list(stored.columns)[-7:] == list(new_columns)
    assert stored[list(new_columns)].isna().all(axis=None)  # rows from before: NULL
    # A null source counts as streaming: a newer pane replaces it, and so does a backfill.
    newer = metric_row(
        pane_index=4,
        latencies_ms=(1.0, 2.0, 3.0),
        emitted_at=old_row.emitted_at + dt.timedelta(seconds=30),
    )
    upsert_metric_rows(db_path, [newer])
    assert stored_rows(db_path) == expected_rows(newer)
    backfill = metric_row(latencies_ms=(9.0,), source="backfill")
    upsert_metric_rows(db_path, [backfill])
    assert stored_rows(db_path) == expected_rows(backfill)
    assert read_metrics(db_path, "metrics_daily")["backfill_window_count"].tolist() == [1]


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
    assert stored_rows(db_path) == expected_rows(metric_row())


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

    # The views bucket days in UTC whatever the session time zone is.
    with duckdb.connect(db_path) as con:
        con.execute("SET TimeZone = 'Asia/Tokyo'")
        days = con.sql("SELECT DISTINCT CAST(day AS VARCHAR) FROM metrics_daily ORDER BY 1")
        assert days.fetchall() == [("2026-01-27",), ("2026-01-28",)]


def test_view_sql_is_one_bigquery_definition_per_view():
    # The views read the long-lived tables (and the base views), never the minute rows, which
    # expire first.
    readable = {"metrics_rollup", "freshness_minute", "usage_hourly", *views.BASE_VIEW_NAMES}
    for name in views.VIEW_NAMES:
        bigquery = views.bigquery_view_sql(name, "my-project.genai")
        assert "{dataset}" not in bigquery
        named = set(re.findall(r"`my-project\.genai\.(\w+)`", bigquery)) - {name}
        assert named and named <= readable, (name, named)
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


def test_write_audit_log_rejects_a_flush_under_a_second():
    with pytest.raises(ValueError, match="flush_s"):
        WriteAuditLog("audit.sqlite", flush_s=0)


# --- panes ---------------------------------------------------------------------------------


def test_join_parts_of_an_empty_pane_is_an_empty_batch():
    # Streaming panes can fire empty (batch_windowing); joining one must not fail the bundle.
    from pipelines.io.sinks.files import _join_parts

    key = ("raw/event_date=2026-01-27/region=us", 0)
    assert _join_parts(key, []) == (key, EventBatch("", ()))
    event = redacted_event(event_id=eid("one"))
    assert _join_parts(key, [EventBatch("s", (event,)), EventBatch("t", ())]) == (
        key,
        EventBatch("s", (event,)),
    )
