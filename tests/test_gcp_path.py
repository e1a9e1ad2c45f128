"""The Google Cloud path without services: batching, retries and dead letters of the sinks,
table and view definitions, SQL, row formats, message attributes, options, graph wiring.

The sinks themselves are exercised against the emulators in ``test_gcp_integration``. Here,
``_RecordingSink`` is a fake of this project's own ``BatchSink`` interface (not of a Google
API): it fails on purpose to show what the retry and dead-letter machinery does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from typing import ClassVar

import apache_beam as beam
import duckdb
import pytest
import sqlglot
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from pipelines import backfill, streaming
from pipelines.io.sinks.batches import BatchSink, SinkRetry, WriteInBatches, sink_dead_letters
from pipelines.io.sinks.embedded import warehouse
from pipelines.io.sinks.files import WriteRawEvents
from pipelines.io.sinks.gcp import bigquery, postgres
from pipelines.io.sources import pubsub
from pipelines.local import loadgen, publish
from pipelines.local.run import build_locally
from schemas.contract import bigquery_schema, load_schema
from tests.factories import redacted_event
from tests.sink_factories import T0, audit_record, metric_row
from tests.stack import local_stack
from tests.support.pipelines import TestPipeline, local_pipeline, usage_error
from transforms.elements import EventBatch

FAST = SinkRetry(max_attempts=3, first_backoff_s=0.0, max_backoff_s=0.0)


# --- batching, retries, dead letters -------------------------------------------------------


class _Flaky(Exception):
    pass


class _Refused(Exception):
    pass


class _RecordingSink(BatchSink):
    """Records batches in a class-level log (DoFns are copies); fails as scripted per batch:
    ``failures`` transient errors before each success, or always ``refuse`` / ``crash``."""

    name = "recording"
    step = "write_recording"
    written: ClassVar[dict[str, list[list[str]]]] = {}
    attempts: ClassVar[dict[str, int]] = {}
    _lock = threading.Lock()

    def __init__(self, token: str, failures: int = 0, mode: str = "flaky"):
        self._token, self._failures, self._mode = token, failures, mode
        with self._lock:
            self.written[token] = []
            self.attempts[token] = 0

    def write(self, batch):
        with self._lock:
            self.attempts[self._token] += 1
            if self._mode == "refuse":
                raise _Refused()
            if self._mode == "crash":
                raise KeyError("a bug")
            if self.attempts[self._token] % (self._failures + 1):
                raise _Flaky()
            self.written[self._token].append(sorted(r.audit_id for r in batch))

    def is_transient(self, error):
        return isinstance(error, _Flaky)

    def is_rejected(self, error):
        return isinstance(error, _Refused)


def _records(n: int) -> list:
    return [audit_record(event_id=f"evt-{i:03d}") for i in range(n)]


def test_transient_failures_are_retried_then_written_once(request):
    sink = _RecordingSink(request.node.name, failures=2)
    records = _records(7)
    with TestPipeline() as p:
        failed = (
            p
            | beam.Create(records)
            | WriteInBatches(sink, id_field="audit_id", retry=FAST, max_batch_rows=3)
        )
        assert_that(failed, equal_to([]))
    batches = _RecordingSink.written[request.node.name]
    assert sorted(i for b in batches for i in b) == sorted(r.audit_id for r in records)
    assert [len(b) for b in batches] == [3, 3, 1]  # chunks of max_batch_rows
    assert _RecordingSink.attempts[request.node.name] == 3 * 3  # two failures before each


def test_exhausted_retries_become_counted_dead_letters(request):
    sink = _RecordingSink(request.node.name, failures=5)  # more than max_attempts
    records = _records(4)
    with TestPipeline() as p:
        failed = p | beam.Create(records) | WriteInBatches(sink, id_field="audit_id", retry=FAST)
        assert_that(
            failed | beam.Map(lambda d: (d.reason, d.step, d.error_type, d.event_id)),
            equal_to(
                [
                    ("sink_failed:recording", "write_recording", "_Flaky", r.event_id)
                    for r in records
                ]
            ),
        )
        payloads = failed | beam.Map(lambda d: json.loads(d.payload)["audit_id"])
        assert_that(payloads, equal_to([r.audit_id for r in records]), label="PayloadsReplayable")
    assert _RecordingSink.written[request.node.name] == []
    assert _RecordingSink.attempts[request.node.name] == FAST.max_attempts


def test_rejected_rows_are_dead_lettered_without_retries(request):
    sink = _RecordingSink(request.node.name, mode="refuse")
    with TestPipeline() as p:
        failed = p | beam.Create(_records(2)) | WriteInBatches(sink, id_field="audit_id")
        assert_that(failed | beam.Map(lambda d: d.error_type), equal_to(["_Refused"] * 2))
    assert _RecordingSink.attempts[request.node.name] == 1


def test_unexpected_errors_fail_the_bundle(request):
    sink = _RecordingSink(request.node.name, mode="crash")
    with pytest.raises(Exception, match="a bug"), TestPipeline() as p:
        _ = p | beam.Create(_records(1)) | WriteInBatches(sink, id_field="audit_id", retry=FAST)


def test_without_dead_lettering_exhausted_retries_fail_the_bundle(request):
    sink = _RecordingSink(request.node.name, failures=5)
    with pytest.raises(Exception, match="_Flaky"), TestPipeline() as p:
        _ = (
            p
            | beam.Create(_records(1))
            | WriteInBatches(sink, id_field="audit_id", retry=FAST, dead_letter_failures=False)
        )


def test_streaming_batches_flush_on_processing_time_again_and_again(request):
    """Regression: AfterAny(AfterCount, AfterProcessingTime) fired once and never again."""
    sink = _RecordingSink(request.node.name)
    records = _records(6)
    stream = TestStream().advance_watermark_to(T0.timestamp())
    for i in range(0, 6, 2):
        stream = stream.add_elements(
            [window.TimestampedValue(r, T0.timestamp()) for r in records[i : i + 2]]
        ).advance_processing_time(5)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        _ = p | stream | WriteInBatches(sink, id_field="audit_id", flush_s=2, num_shards=1)
    batches = _RecordingSink.written[request.node.name]
    assert len(batches) == 3, batches  # one per processing-time firing, not one at the end
    assert sorted(i for b in batches for i in b) == sorted(r.audit_id for r in records)


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


def test_raw_archive_write_failures_are_retried_then_dead_lettered(tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the archive root should be")
    events = [redacted_event(event_id=f"00000000-0000-4000-8000-00000000000{i}") for i in range(3)]
    with TestPipeline() as p:
        result = (
            p
            | beam.Create([EventBatch("", tuple(events))])
            | WriteRawEvents(str(blocked), retry=FAST, dead_letter_failures=True)
        )
        assert_that(result["files"], equal_to([]))
        assert_that(
            result["dead_letters"] | beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to([("sink_failed:gcs", e.event_id) for e in events]),
            label="DeadLetters",
        )


# --- BigQuery: tables, SQL, parameters -----------------------------------------------------


def test_bigquery_tables_come_from_the_avro_contract():
    metrics = bigquery.metrics_table("p.ds")
    assert [f.name for f in metrics.schema] == [
        f["name"] for f in load_schema("metric_row")["fields"]
    ]
    assert [f.to_api_repr()["type"] for f in metrics.schema] == [
        f["type"] for f in bigquery_schema("metric_row")
    ]
    assert metrics.time_partitioning.field == "window_start"
    assert metrics.time_partitioning.type_ == "DAY"
    assert metrics.time_partitioning.expiration_ms == 365 * 86_400_000
    assert metrics.clustering_fields == ["model", "region"]
    audit = bigquery.audit_table("p.ds")
    assert [f.name for f in audit.schema] == [
        f["name"] for f in load_schema("audit_record")["fields"]
    ]
    assert audit.time_partitioning.field == "recorded_at"
    assert audit.time_partitioning.expiration_ms is None


def test_merge_sql_is_valid_bigquery_and_prunes_partitions():
    sql = bigquery.metrics_merge_sql("p.ds")
    sqlglot.parse_one(sql, read="bigquery")
    assert sql.startswith("MERGE `p.ds.metrics_minute` AS t")
    assert "t.window_start BETWEEN @min_window_start AND @max_window_start" in sql
    assert "FROM_BASE64(r.`users_hll`)" in sql
    assert "s.pane_index > t.pane_index" in sql
    # A backfill row outranks a streaming one whatever its pane index, as in DuckDB.
    assert "(CASE WHEN s.source = 'backfill' THEN 1 ELSE 0 END) > (CASE WHEN t.source" in sql


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
            "SELECT model, request_count, token_sum, active_minutes, regions, request_share, "
            "token_share FROM model_utilization_daily ORDER BY model"
        ).fetchall()
    # a: one minute served from two regions; b: two windows, one of them without requests.
    assert rows == [("a", 4, 400, 1, 2, 0.5, 0.4), ("b", 4, 600, 1, 1, 0.5, 0.6)]


# --- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_ddl_comes_from_the_contract():
    ddl = postgres.audit_table_ddl()
    for field in load_schema("audit_record")["fields"]:
        assert f"\n  {field['name']} " in ddl
    assert "audit_id TEXT NOT NULL PRIMARY KEY" in ddl
    assert "UNIQUE (event_id, outcome)" in ddl
    assert "redaction_counts JSONB NOT NULL" in ddl
    assert "event_time TIMESTAMPTZ,\n" in ddl
    assert postgres._insert_sql().endswith("ON CONFLICT DO NOTHING")


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


# --- options and wiring --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "pubsub"], "--source pubsub needs --subscription"),
        (["--sink", "cloud"], "--sink must be one of"),
        (["--sink", "gcp"], "--bigquery_dataset must be PROJECT.DATASET"),
        (
            ["--sink", "gcp", "--bigquery_dataset", "p.d", "--audit_db_url", "env:NO_SUCH_URL"],
            "NO_SUCH_URL is not set",
        ),
        (
            [
                "--sink=gcp",
                "--bigquery_dataset=p.d",
                "--audit_db_url=postgresql://h/db",
                "--dead_letter_topic=topic",
            ],
            "--dead_letter_topic must be",
        ),
        (
            [
                "--sink=gcp",
                "--bigquery_dataset=p.d",
                "--audit_db_url=postgresql://h/db",
                "--sink_max_attempts=0",
            ],
            "--sink_max_attempts must be >= 1",
        ),
    ],
)
def test_invalid_gcp_options_fail_with_a_clear_message(args, message, capsys):
    assert message in usage_error(streaming.run, args, capsys)


def _labels(pipeline: beam.Pipeline) -> dict[str, beam.PTransform]:
    found = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            found[node.full_label] = node.transform

        def visit_transform(self, node):
            found[node.full_label] = node.transform

    pipeline.visit(Visitor())
    return found


def _graph(args: list[str]) -> dict[str, beam.PTransform]:
    """The labelled transforms of the streaming graph (with the local-only steps when the
    source is synthetic, as a local run builds it). Built on the local runner whatever
    ``--runner`` says, so that nothing tries to reach Google Cloud."""
    options = PipelineOptions(args)
    options.view_as(StandardOptions).streaming = True
    pipeline = local_pipeline(options)
    view = options.view_as(streaming.StreamingOptions)
    if view.source == "synthetic":
        build_locally(pipeline, options, view, streaming.build)
    else:
        streaming.build(pipeline, view)
    return _labels(pipeline)


GCP_ARGS = [
    "--source=pubsub",
    "--subscription=projects/local-project/subscriptions/s",
    "--sink=gcp",
    "--raw_root=gs://bucket/archive",
    "--bigquery_dataset=local-project.genai",
    "--audit_db_url=postgresql://h/db",
    "--dead_letter_topic=projects/local-project/topics/dl",
]


def test_gcp_and_embedded_share_every_transform_but_the_sinks():
    gcp = _graph(GCP_ARGS)
    embedded = _graph(["--source=synthetic", "--rate=10", "--duration_s=1"])
    core = {label for label in embedded if label.startswith("AnalyzeEvents")}
    assert core and core == {label for label in gcp if label.startswith("AnalyzeEvents")}
    assert "WriteGcp" in gcp and "WriteEmbedded" not in gcp
    assert "WriteEmbedded" in embedded and "WriteGcp" not in embedded
    for sink in (
        "WriteRawEvents",
        "write_metrics_bigquery",
        "write_audit_postgres",
        "write_audit_bigquery",
        "publish_dead_letters",
        "WriteDeadLetters",
    ):
        assert f"WriteGcp/{sink}" in gcp
    # The local-only steps are in the local graph only.
    assert "TallyOutcomes" in embedded and "GenerateEvents" in embedded
    assert "TallyOutcomes" not in gcp and "GenerateEvents" not in gcp


def test_pubsub_source_reads_with_attributes_and_event_time():
    read = _graph(GCP_ARGS)["ReadGatewayEvents/ReadPubSub"]
    source = read._source
    assert source.with_attributes and source.timestamp_attribute == "event_time"
    assert source.full_subscription == "projects/local-project/subscriptions/s"
    assert source.id_label is None  # the DirectRunner rejects it
    on_dataflow = _graph([*GCP_ARGS, "--runner=DataflowRunner"])["ReadGatewayEvents/ReadPubSub"]
    assert on_dataflow._source.id_label == "event_id"


def test_backfill_takes_the_gcp_sink_without_archiving_a_replay():
    options = PipelineOptions(["--input_format=avro", "--input=gs://b/archive", *GCP_ARGS[2:]])
    pipeline = local_pipeline(options)
    backfill.build(pipeline, options.view_as(backfill.BackfillOptions))
    labels = _labels(pipeline)
    assert "WriteGcp/write_metrics_bigquery" in labels
    assert "WriteGcp/WriteRawEvents" not in labels


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
