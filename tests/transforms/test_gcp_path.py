"""The Google Cloud path in batch pipelines, without services: the sinks' batching, retries and
dead letters (with ``RecordingSink``, ``tests/support/gcp_path.py``), the raw archive's write
failures, and the wiring of the streaming and backfill graphs with the gcp sink."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines import backfill, streaming
from pipelines.io.sinks.batches import WriteInBatches
from pipelines.io.sinks.files import WriteRawEvents
from pipelines.local.run import build_locally
from tests.support.factories import redacted_event
from tests.support.gcp_path import FAST, RecordingSink, audit_records
from tests.support.pipelines import TestPipeline, local_pipeline
from transforms.elements import EventBatch


def test_transient_failures_are_retried_then_written_once(request):
    sink = RecordingSink(request.node.name, failures=2)
    records = audit_records(7)
    with TestPipeline() as p:
        failed = (
            p
            | beam.Create(records)
            | WriteInBatches(sink, id_field="audit_id", retry=FAST, max_batch_rows=3)
        )
        assert_that(failed, equal_to([]))
    batches = RecordingSink.written[request.node.name]
    assert sorted(i for b in batches for i in b) == sorted(r.audit_id for r in records)
    assert [len(b) for b in batches] == [3, 3, 1]  # chunks of max_batch_rows
    assert RecordingSink.attempts[request.node.name] == 3 * 3  # two failures before each


def test_exhausted_retries_become_counted_dead_letters(request):
    sink = RecordingSink(request.node.name, failures=5)  # more than max_attempts
    records = audit_records(4)
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
    assert RecordingSink.written[request.node.name] == []
    assert RecordingSink.attempts[request.node.name] == FAST.max_attempts


def test_rejected_rows_are_dead_lettered_without_retries(request):
    sink = RecordingSink(request.node.name, mode="refuse")
    with TestPipeline() as p:
        failed = p | beam.Create(audit_records(2)) | WriteInBatches(sink, id_field="audit_id")
        assert_that(failed | beam.Map(lambda d: d.error_type), equal_to(["_Refused"] * 2))
    assert RecordingSink.attempts[request.node.name] == 1


def test_unexpected_errors_fail_the_bundle(request):
    sink = RecordingSink(request.node.name, mode="crash")
    with pytest.raises(Exception, match="a bug"), TestPipeline() as p:
        _ = (
            p
            | beam.Create(audit_records(1))
            | WriteInBatches(sink, id_field="audit_id", retry=FAST)
        )


def test_without_dead_lettering_exhausted_retries_fail_the_bundle(request):
    sink = RecordingSink(request.node.name, failures=5)
    with pytest.raises(Exception, match="_Flaky"), TestPipeline() as p:
        _ = (
            p
            | beam.Create(audit_records(1))
            | WriteInBatches(sink, id_field="audit_id", retry=FAST, dead_letter_failures=False)
        )


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
        assert_that(result.files, equal_to([]))
        assert_that(
            result.dead_letters | beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to([("sink_failed:gcs", e.event_id) for e in events]),
            label="DeadLetters",
        )


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
