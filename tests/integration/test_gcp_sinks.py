"""Integration: the Google Cloud sinks' functions against the local stand-ins (bqemulator and
PostgreSQL): BigQuery tables, views and the MERGE rule, and idempotent PostgreSQL audit inserts.
The stack comes from ``tests/stack/local_stack.py`` (``make test`` starts it)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from tests.support.gcp_stack import bq_rows

pytestmark = pytest.mark.integration


def test_bigquery_tables_views_and_merge_rule(stack):
    """Partitioning, clustering (set through the API) and expiry survive on the emulator; the
    commit keeps the newest pane per key, measures each event's freshness once and keeps the
    rollups and per-minute freshness in step; replays and out-of-order panes change nothing."""
    from pipelines.io.sinks.gcp import bigquery as bq
    from pipelines.views import VIEW_NAMES
    from tests.support.sink_factories import metric_row
    from transforms.elements import IngestionBin

    dataset = f"{stack.project}.it_merge_{uuid.uuid4().hex[:8]}"
    client = bq.bigquery_client(stack.project)
    bq.create_bigquery_objects(client, dataset)
    bq.create_bigquery_objects(client, dataset)  # idempotent
    table = client.get_table(f"{dataset}.metrics_minute")
    assert table.time_partitioning.field == "window_start"
    assert table.time_partitioning.type_ == "HOUR"
    assert table.time_partitioning.expiration_ms == 30 * 86_400_000
    assert table.clustering_fields == ["model", "region"]
    rollups = client.get_table(f"{dataset}.metrics_rollup")
    assert rollups.time_partitioning.expiration_ms == 365 * 86_400_000
    assert client.get_table(f"{dataset}.audit_log").time_partitioning.field == "recorded_at"

    t0 = int(metric_row().window_start.timestamp())
    pane0 = metric_row(
        pane_timing="EARLY",
        pane_index=0,
        policy_flag_counts={"pii_redacted": 1},
        ingestion_counts=(IngestionBin(t0 + 5, 2),),
    )
    pane1 = metric_row(
        latencies_ms=(5.0, 50.0, 500.0),
        pane_index=1,
        emitted_at=pane0.emitted_at + dt.timedelta(seconds=30),
        ingestion_counts=(IngestionBin(t0 + 5, 2), IngestionBin(t0 + 70, 1)),
    )
    other = metric_row(
        region="us-central1",
        window_start=pane0.window_start + dt.timedelta(days=1),
        policy_flag_counts={"jailbreak_suspected": 1},
    )

    def at(seconds):
        return lambda: pane0.window_start + dt.timedelta(seconds=seconds)

    first = bq.merge_metric_rows(client, dataset, [pane0, other], clock=at(40))
    assert (len(first.minute_rows), first.visible) == (2, {35: 2})
    second = bq.merge_metric_rows(client, dataset, [pane1, pane0], clock=at(100))
    assert (len(second.minute_rows), second.visible) == (1, {30: 1})  # the new event only
    before = sorted(bq_rows(dataset, "metrics_minute"), key=lambda r: r["region"])
    bq.merge_metric_rows(client, dataset, [pane0, other, pane1])  # a replay of everything
    # the same pane recomputed later: same metrics, later emitted_at -> left alone
    bq.merge_metric_rows(
        client, dataset, [pane1._replace(emitted_at=pane1.emitted_at + dt.timedelta(hours=1))]
    )
    after = sorted(bq_rows(dataset, "metrics_minute"), key=lambda r: r["region"])
    assert after == before
    assert [(r["region"], r["pane_index"], r["request_count"]) for r in after] == [
        ("europe-west1", 1, 3),
        ("us-central1", 0, 2),
    ]
    assert after[0]["users_hll"] == pane1.users_hll
    assert after[0]["latency_sketch_bins"] == [
        {"index": b.index, "count": b.count} for b in pane1.latency_sketch_bins
    ]
    assert after[0]["freshness_counts"] == [
        {"latency_s": 30, "count": 1},
        {"latency_s": 35, "count": 2},
    ]
    hours = {
        (r["grain"], r["region"]): r["request_count"] for r in bq_rows(dataset, "metrics_rollup")
    }
    assert hours == {
        ("hour", "europe-west1"): 3,
        ("day", "europe-west1"): 3,
        ("hour", "us-central1"): 2,
        ("day", "us-central1"): 2,
    }
    freshness = sorted((r["latency_s"], r["events"]) for r in bq_rows(dataset, "freshness_minute"))
    assert freshness == [(30, 1), (35, 2)]
    bq.merge_usage_rows(client, dataset, [_usage_row()])
    for view in VIEW_NAMES:  # every view runs on BigQuery's dialect too
        assert bq_rows(dataset, view), view
    (slo,) = bq_rows(dataset, "freshness_slo_daily")
    assert (slo["events"], slo["events_within_slo"], slo["slo_met"]) == (3, 3, True)
    daily = {r["region"]: r["request_count"] for r in bq_rows(dataset, "metrics_daily")}
    assert daily == {"europe-west1": 3, "us-central1": 2}
    (flags,) = bq_rows(dataset, "policy_flag_rates_daily")
    assert (flags["policy_flag"], flags["flag_count"], flags["flag_rate"]) == (
        "jailbreak_suspected",
        1,
        0.5,
    )

    # A dropped table: the sink's first attempt meets NotFound, the retry creates it again.
    from pipelines.io.sinks.batches import SinkRetry, write_with_retries

    client.delete_table(f"{dataset}.metrics_minute")
    sink = bq.MetricsMergeSink(dataset)
    sink.setup()
    failures = []
    retry = SinkRetry(max_attempts=3, first_backoff_s=0.1, max_backoff_s=0.1)
    assert write_with_retries(sink, [pane1], retry, failures.append) is None
    assert [type(f).__name__ for f in failures] == ["NotFound"]
    assert [r["request_count"] for r in bq_rows(dataset, "metrics_minute")] == [3]


def _usage_row():
    from tests.support.sink_factories import T0
    from transforms.elements import UsageRow

    return UsageRow(
        hour_start=T0,
        user_key="u1",
        model="gemini-2.5-pro",
        model_version="",
        request_count=2,
        token_sum=600,
        prompt_token_sum=400,
        completion_token_sum=200,
        unsplit_token_sum=0,
        latency_ms_sum=300.0,
        policy_flagged_count=1,
        estimated_cost_usd=0.5,
        price_table_version="test-1",
        pane_timing="ON_TIME",
        pane_index=0,
        emitted_at=T0 + dt.timedelta(hours=1),
        source="streaming",
    )


def test_bigquery_usage_rows_follow_the_pane_rule(stack):
    from pipelines.io.sinks.gcp import bigquery as bq

    dataset = f"{stack.project}.it_usage_{uuid.uuid4().hex[:8]}"
    client = bq.bigquery_client(stack.project)
    row = _usage_row()
    assert bq.merge_usage_rows(client, dataset, [row, row._replace(user_key="u2")]) == 2
    assert bq.merge_usage_rows(client, dataset, [row]) == 0  # a replay
    later = row._replace(request_count=3, pane_index=1, emitted_at=row.emitted_at + _MINUTE)
    assert bq.merge_usage_rows(client, dataset, [later, row]) == 1
    stored = sorted((r["user_key"], r["request_count"]) for r in bq_rows(dataset, "usage_hourly"))
    assert stored == [("u1", 3), ("u2", 2)]
    (top,) = [r for r in bq_rows(dataset, "top_users_daily") if r["user_key"] == "u1"]
    assert top["request_count"] == 3


_MINUTE = dt.timedelta(minutes=1)


def test_postgres_audit_inserts_are_idempotent(stack):
    import psycopg

    from pipelines.io.sinks.gcp import postgres as pg
    from tests.support.sink_factories import audit_record

    database = f"it_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = stack.admin_db_url.rsplit("/", 1)[0] + f"/{database}"
    records = [audit_record(event_id=f"evt-{i}") for i in range(3)]
    invalid = audit_record(
        event_id=None,
        outcome="dead_lettered",
        reason="invalid_json",
        dead_letter_id="dl-1",
        audit_id="a" * 64,
        redaction_counts={},
    )
    with psycopg.connect(url) as conn:
        # A table as release 1 made it, with the former unique key: migrated in place.
        (table, _) = pg.audit_table_ddl().split(";\n")
        conn.execute(table.replace("\n)", ",\n  UNIQUE (event_id, outcome)\n)"))
        conn.commit()
        pg.create_audit_table(conn)
        pg.create_audit_table(conn)
        assert pg.insert_audit_rows(conn, [*records, invalid]) == 4
        # A replay, the same audit_id again: nothing changes.
        assert pg.insert_audit_rows(conn, [*records, invalid]) == 0
        # The same (event_id, outcome) from another input: a record of its own.
        assert pg.insert_audit_rows(conn, [records[0]._replace(audit_id="b" * 64)]) == 1
        # One input (audit_id) again with a lower outcome, then a higher one: written wins.
        lower = invalid._replace(audit_id=records[1].audit_id, event_id="evt-1")
        assert pg.insert_audit_rows(conn, [lower]) == 0
        higher = records[2]._replace(audit_id=invalid.audit_id, event_id="evt-x")
        assert pg.insert_audit_rows(conn, [higher]) == 1
        rows = conn.execute(
            "SELECT audit_id, event_id, outcome, redaction_counts FROM audit_log ORDER BY audit_id"
        ).fetchall()
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_log'"
            ).fetchall()
        }
    assert len(rows) == 5
    by_id = {audit_id: (event_id, outcome) for audit_id, event_id, outcome, _ in rows}
    assert by_id[records[1].audit_id] == ("evt-1", "written")
    assert by_id["a" * 64] == ("evt-x", "written")
    assert by_id["b" * 64] == ("evt-0", "written")
    assert "audit_log_input_id" in indexes and "audit_log_event_id_outcome_key" not in indexes


def test_postgres_takes_out_only_the_row_it_cannot_store(stack):
    """A NUL character, which Avro and SQLite store and PostgreSQL refuses: the batch fails on
    the server, the sink finds the row (``unencodable``), dead-letters it alone
    (``internal_error:write_audit_postgres``) and inserts the others."""
    import apache_beam as beam
    import psycopg
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.io.sinks.batches import SinkRetry, WriteInBatches
    from pipelines.io.sinks.gcp import postgres as pg
    from tests.support.pipelines import TestPipeline
    from tests.support.sink_factories import audit_record

    database = f"it_nul_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = stack.admin_db_url.rsplit("/", 1)[0] + f"/{database}"
    records = [audit_record(event_id=f"evt-{i}") for i in range(3)]
    records.append(audit_record(event_id="evt-nul", request_id="R-\x00-1"))
    retry = SinkRetry(max_attempts=2, first_backoff_s=0.0, max_backoff_s=0.0)
    with TestPipeline() as p:
        failed = p | beam.Create(records) | WriteInBatches(pg.AuditInsertSink(url), retry=retry)
        assert_that(
            failed | beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to([("internal_error:write_audit_postgres", "evt-nul")]),
        )
    with psycopg.connect(url) as conn:
        stored = [r for (r,) in conn.execute("SELECT event_id FROM audit_log ORDER BY event_id")]
    assert stored == ["evt-0", "evt-1", "evt-2"]
