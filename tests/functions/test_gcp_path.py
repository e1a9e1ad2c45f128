"""The Google Cloud path without services, as plain functions: the sinks' dead letters, table
and view definitions, SQL, row formats, error classes, database URLs, message attributes, the
load publisher, the local stack's exports.

In pipelines: ``tests/transforms/test_gcp_path.py`` and ``tests/streaming/test_gcp_path.py``;
the command's options: ``tests/e2e/test_gcp_path.py``. The sinks themselves are exercised
against the emulators in ``tests/integration/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import duckdb
import pytest
import sqlglot

from pipelines.io.sinks.batches import sink_dead_letters
from pipelines.io.sinks.embedded import warehouse
from pipelines.io.sinks.gcp import bigquery, postgres
from pipelines.io.sinks.warehouse_tables import FRESHNESS, METRICS, ROLLUPS, USAGE
from pipelines.io.sources import pubsub
from pipelines.local import loadgen, publish
from schemas.contract import bigquery_schema, load_schema
from tests.stack import local_stack
from tests.support.sink_factories import T0, audit_record, metric_row
from transforms.audit import outcome_precedence_sql

# --- dead letters of the sinks ---------------------------------------------------------------


def test_sink_dead_letters_name_the_error_never_its_message():
    error = RuntimeError("row 7: value 'alice@example.com' is invalid")
    (letter,) = sink_dead_letters(
        [metric_row()], sink_name="bigquery", step="s", error=error, attempts=3, failed_at=T0
    )
    assert letter.reason == "sink_failed:bigquery"
    assert "alice" not in letter.error_message and letter.error_message == (
        "s: RuntimeError after 3 attempt(s)"
    )
    assert json.loads(letter.payload)["window_start"] == T0.isoformat()
    assert letter.payload_state == "redacted" and letter.event_id is None


# --- BigQuery: tables, SQL, parameters -----------------------------------------------------


def test_bigquery_tables_come_from_the_avro_contract():
    metrics = bigquery.metrics_table("p.ds")
    assert [f.name for f in metrics.schema] == [
        f["name"] for f in load_schema("metric_row")["fields"]
    ]
    assert [f.to_api_repr()["type"] for f in metrics.schema] == [
        f["type"] for f in bigquery_schema("metric_row")
    ]
    # Hour partitions: a commit reads and MERGEs only the hours it touches. Minute rows are kept
    # 30 days; the rollups, per-minute freshness and usage a year.
    assert metrics.time_partitioning.field == "window_start"
    assert metrics.time_partitioning.type_ == "HOUR"
    assert metrics.time_partitioning.expiration_ms == 30 * 86_400_000
    assert metrics.clustering_fields == ["model", "region"]
    for table, schema, column in (
        (ROLLUPS, "metric_rollup", "period_start"),
        (FRESHNESS, "freshness_row", "window_start"),
        (USAGE, "usage_row", "hour_start"),
    ):
        definition = bigquery.warehouse_table("p.ds", table)
        assert [f.name for f in definition.schema] == [
            f["name"] for f in load_schema(schema)["fields"]
        ]
        assert definition.time_partitioning.field == column
        assert definition.time_partitioning.type_ == "DAY"
        assert definition.time_partitioning.expiration_ms == 365 * 86_400_000
    audit = bigquery.audit_table("p.ds")
    assert [f.name for f in audit.schema] == [
        f["name"] for f in load_schema("audit_record")["fields"]
    ]
    assert audit.time_partitioning.field == "recorded_at"
    assert audit.time_partitioning.expiration_ms is None


@pytest.mark.parametrize("table", [METRICS, ROLLUPS, FRESHNESS, USAGE], ids=lambda t: t.name)
def test_merge_sql_is_valid_bigquery_and_prunes_partitions(table):
    # The rows it MERGEs were chosen by the commit (metrics_commit): it stores them as they are.
    sql = bigquery.merge_sql("p.ds", table)
    sqlglot.parse_one(sql, read="bigquery")
    assert sql.startswith(f"MERGE `p.ds.{table.name}` AS t")
    partition = bigquery.warehouse_table("p.ds", table).time_partitioning.field
    assert f"t.`{partition}` BETWEEN @min_time AND @max_time" in sql
    assert all(f"t.`{c}` = s.`{c}`" in sql for c in table.key)
    assert ("FROM_BASE64(r.`users_hll`)" in sql) == (table in (METRICS, ROLLUPS))


def test_rows_parameter_shape():
    row = metric_row(policy_flag_counts={"pii_redacted": 2})
    param = bigquery._rows_parameter([row]).to_api_repr()
    assert param["name"] == "rows" and param["parameterType"]["type"] == "ARRAY"
    (value,) = param["parameterValue"]["arrayValues"]
    fields = value["structValues"]
    assert fields["model"] == {"value": row.model}
    assert fields["policy_flag_counts"]["arrayValues"][0]["structValues"] == {
        "key": {"value": "pii_redacted"},
        "value": {"value": "2"},
    }
    assert len(fields["latency_sketch_bins"]["arrayValues"]) == len(row.latency_sketch_bins)
    import base64

    assert base64.b64decode(fields["users_hll"]["value"]) == row.users_hll


def test_audit_json_row():
    record = audit_record(redaction_counts={"PHONE_NUMBER": 1, "EMAIL_ADDRESS": 2})
    row = bigquery.audit_json_row(record)
    json.dumps(row)  # serialisable as is
    assert row["recorded_at"] == "2026-01-27T10:00:07+00:00"
    assert row["redaction_counts"] == [
        {"key": "EMAIL_ADDRESS", "value": 2},
        {"key": "PHONE_NUMBER", "value": 1},
    ]


def test_bigquery_error_classes():
    from google.api_core import exceptions as api

    transient = [
        api.ServiceUnavailable("down"),
        api.InternalServerError("oops"),
        api.TooManyRequests("slow down"),
        api.NotFound("table being created"),
        api.Forbidden("Exceeded rate limits: rateLimitExceeded"),
        ConnectionError("refused"),
    ]
    assert all(bigquery._is_transient(e) for e in transient)
    assert not bigquery._is_transient(api.Forbidden("accessDenied"))
    assert not bigquery._is_transient(api.BadRequest("invalid"))
    assert bigquery._is_rejected(api.BadRequest("invalid"))
    assert not bigquery._is_rejected(KeyError("bug"))


def test_split_dataset():
    assert bigquery.split_dataset("my-project.genai") == ("my-project", "genai")
    for bad in ("genai", "a.b.c", ".x", "p.`x`"):
        with pytest.raises(ValueError):
            bigquery.split_dataset(bad)


def test_model_utilization_view_on_duckdb(tmp_path):
    db_path = str(tmp_path / "w.duckdb")
    warehouse.create_warehouse(db_path)
    warehouse.upsert_metric_rows(
        db_path,
        [
            metric_row(model="a", region="us", latencies_ms=(1.0,) * 3, token_sum=300),
            metric_row(model="a", region="eu", latencies_ms=(1.0,), token_sum=100),
            metric_row(model="b", region="us", latencies_ms=(1.0,) * 4, token_sum=600),
            metric_row(
                model="b",
                region="us",
                window_start=T0 + dt.timedelta(minutes=1),
                latencies_ms=(),
                token_sum=0,
            ),
        ],
    )
    with duckdb.connect(db_path, read_only=True) as con:
        rows = con.sql(
            "SELECT model, request_count, token_sum, region_minutes, regions, request_share, "
            "token_share FROM model_utilization_daily ORDER BY model"
        ).fetchall()
    # a: one minute served from two regions (two region-minutes); b: two windows in one region.
    assert rows == [("a", 4, 400, 2, 2, 0.5, 0.4), ("b", 4, 600, 2, 1, 0.5, 0.6)]


# --- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_ddl_comes_from_the_contract():
    ddl = postgres.audit_table_ddl()
    for field in load_schema("audit_record")["fields"]:
        assert f"\n  {field['name']} " in ddl
    assert "audit_id TEXT NOT NULL PRIMARY KEY" in ddl
    assert "UNIQUE" not in ddl  # one row per input: audit_id is the only key
    assert "redaction_counts JSONB NOT NULL" in ddl
    assert "event_time TIMESTAMPTZ,\n" in ddl
    upsert = postgres._insert_sql()
    assert "ON CONFLICT (audit_id) DO UPDATE SET event_id = EXCLUDED.event_id" in upsert
    assert upsert.endswith(
        "WHERE " + outcome_precedence_sql("EXCLUDED") + " > " + outcome_precedence_sql("audit_log")
    )


def test_db_url_references(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_URL_TEST", "postgresql://u@h:5432/db")
    assert postgres.resolve_db_url("env:AUDIT_URL_TEST") == "postgresql://u@h:5432/db"
    path = tmp_path / "url"
    path.write_text("postgresql://u:secret@h/db\n")
    assert postgres.resolve_db_url(f"file:{path}") == "postgresql://u:secret@h/db"
    with pytest.raises(ValueError, match="NOT_SET_VARIABLE is not set"):
        postgres.resolve_db_url("env:NOT_SET_VARIABLE")
    with pytest.raises(ValueError, match=r"postgresql://") as caught:
        postgres.resolve_db_url("mysql://u:secret@h/db")
    assert "secret" not in str(caught.value)
    assert postgres.describe_db_url("postgresql://u:secret@h:5/db") == "postgresql://h:5/db"
    assert postgres.describe_db_url("env:X") == "env:X"


# --- Pub/Sub -------------------------------------------------------------------------------


def test_message_attributes():
    sent = dt.datetime(2026, 1, 27, 12, 0, tzinfo=dt.UTC)
    body = {"event_id": "e-1", "event_time": "2026-01-27T11:59:58.5+01:00"}
    assert pubsub.message_attributes(json.dumps(body).encode(), sent) == {
        "event_id": "e-1",
        "event_time": "2026-01-27T10:59:58.500000Z",
    }
    bad_time = {"event_id": "e-2", "event_time": "27/01/2026 12:00"}
    assert pubsub.message_attributes(json.dumps(bad_time).encode(), sent) == {
        "event_id": "e-2",
        "event_time": "2026-01-27T12:00:00.000000Z",
    }
    naive = {"event_time": "2026-01-27T11:00:00"}
    assert pubsub.message_attributes(json.dumps(naive).encode(), sent) == {
        "event_time": "2026-01-27T12:00:00.000000Z"
    }
    assert pubsub.message_attributes(b'{"event_id": 7', sent) == {
        "event_time": "2026-01-27T12:00:00.000000Z"
    }


def test_event_time_attribute_is_what_beam_parses():
    from apache_beam.utils.timestamp import Timestamp

    sent = dt.datetime(2026, 1, 27, 12, 0, 0, 123456, tzinfo=dt.UTC)
    attribute = pubsub.message_attributes(b"{}", sent)["event_time"]
    assert Timestamp.from_rfc3339(attribute) == Timestamp.from_utc_datetime(sent)


def test_id_label_only_for_dataflow():
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.direct.direct_runner import DirectRunner

    assert pubsub.id_label_for("DataflowRunner") == "event_id"
    assert pubsub.id_label_for("dataflow") == "event_id"
    assert pubsub.id_label_for(DataflowRunner()) == "event_id"
    for runner in (None, "DirectRunner", "BundleBasedDirectRunner", DirectRunner()):
        assert pubsub.id_label_for(runner) is None


def test_burst_profile():
    profile = publish.BurstProfile(rate=1000, burst_factor=5, burst_every_s=60, burst_s=10)
    assert [profile.rate_at(t) for t in (0, 59.9, 60, 69.9, 70, 120, 131)] == [
        1000,
        1000,
        5000,
        5000,
        1000,
        5000,
        1000,
    ]
    assert profile.problems() == []
    assert publish.BurstProfile(rate=0).problems()
    assert publish.BurstProfile(rate=1, burst_every_s=10, burst_s=20).problems()


class _FakePublisher:
    """Stands in for google.cloud.pubsub_v1.PublisherClient.publish: resolved futures."""

    def __init__(self):
        self.messages = []

    def publish(self, topic, data, **attributes):
        import concurrent.futures

        self.messages.append((topic, data, attributes))
        future = concurrent.futures.Future()
        future.set_result(str(len(self.messages)))
        return future


def test_publish_paced_follows_the_burst_profile():
    clock = [0.0]
    publisher = _FakePublisher()
    generator = loadgen.EventGenerator(3, loadgen.LoadProfile(text_pool=8))
    profile = publish.BurstProfile(rate=100, burst_factor=5, burst_every_s=2, burst_s=1)
    stats = publish.publish_paced(
        publisher,
        "projects/p/topics/t",
        lambda n, now: [g.payload for g in generator.batch(n, now)],
        profile,
        duration_s=4,
        tick_s=0.1,
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        monotonic=lambda: clock[0],
    )
    # 2 s at 100/s, then 1 s at 500/s, then 1 s at 100/s.
    assert stats.published == len(publisher.messages) == 100 + 100 + 500 + 100
    assert stats.peak_rate == 500
    from apache_beam.utils.timestamp import Timestamp

    for topic, data, attributes in publisher.messages:
        assert topic == "projects/p/topics/t"
        Timestamp.from_rfc3339(attributes["event_time"])  # always a time Beam can parse
        try:
            document = json.loads(data)
        except ValueError:
            assert "event_id" not in attributes  # truncated JSON: the id is unknown
            continue
        if isinstance(document.get("event_id"), str):
            assert attributes["event_id"] == document["event_id"]


def test_loadgen_cli_needs_exactly_one_destination():
    for argv in ([], ["--output", "x", "--pubsub_topic", "projects/p/topics/t"]):
        with pytest.raises(SystemExit):
            loadgen.main(argv)
    with pytest.raises(SystemExit):
        loadgen.main(["--pubsub_topic", "not/a/topic"])


# --- the local stack -------------------------------------------------------------------------


def test_local_stack_exports():
    env = local_stack.stack_env()
    assert env["GOOGLE_CLOUD_PROJECT"] == "local-project"
    assert env["NO_GCE_CHECK"] == "true"
    assert env["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")
    assert env["BIGQUERY_EMULATOR_HOST"].startswith("http://127.0.0.1:")
    assert env["PUBSUB_EMULATOR_HOST"].startswith("127.0.0.1:")
    assert env["GENAI_AUDIT_DB_URL"].startswith("postgresql://postgres@127.0.0.1:")
    assert local_stack.export_lines().count("export ") == len(env)
    assert os.path.isabs(env["GOOGLE_APPLICATION_CREDENTIALS"])
