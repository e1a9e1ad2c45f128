"""The local Pub/Sub source in the streaming graph: the embedded sinks tell its ledger what
they have committed, so each message is acknowledged once its own outputs are, whatever its
outcome; and a local run reads through it only with the embedded sinks and no named runner."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream

from pipelines import streaming
from pipelines.io.sinks import commits
from pipelines.io.sinks.embedded.audit import read_audit_log
from pipelines.local.acks import ARCHIVE, AUDIT, DEAD_LETTERS, AckLedger
from pipelines.local.pubsub import LocalPubsubSource
from pipelines.local.run import build_locally
from pipelines.local.runner import LocalRunner
from tests.support.core_inputs import T0_S, raw
from tests.support.pipelines import TestPipeline
from transforms.elements import Message


class _Delivery:
    def __init__(self):
        self.acked = 0

    def ack(self) -> None:
        self.acked += 1

    def nack(self) -> None:
        raise AssertionError("nothing is given back in this test")


def test_every_message_is_acknowledged_after_its_outputs_are_committed(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    messages = {
        "pubsub:1": raw(1),
        "pubsub:2": raw(2),
        "pubsub:3": raw(2),  # a second copy of event 2: a duplicate
        "pubsub:4": b"{not json",  # dead-lettered
    }
    ledger = AckLedger()
    deliveries = {input_id: _Delivery() for input_id in messages}
    for input_id, delivery in deliveries.items():
        assert ledger.received(input_id, delivery)
    heard: dict[str, set[str]] = {}

    def listener(output, records):
        if output in (AUDIT, ARCHIVE, DEAD_LETTERS):
            heard.setdefault(output, set()).update(r.input_id for r in records)
        ledger.committed(output, records)

    options = PipelineOptions(["--output_root", str(tmp_path), "--dedupe_shards", "2"])
    options.view_as(StandardOptions).streaming = True
    stream = TestStream(coder=beam.coders.registry.get_coder(Message)).add_elements(
        [
            beam.window.TimestampedValue(Message(body, input_id, int(T0_S * 1e6)), T0_S)
            for input_id, body in messages.items()
        ]
    )
    pipeline = TestPipeline(options=options)
    events = pipeline | stream.advance_watermark_to_infinity()
    streaming.build(pipeline, options.view_as(streaming.StreamingOptions), events=events)
    with commits.listening(listener):
        pipeline.run().wait_until_finish()

    audit = read_audit_log(str(tmp_path / "audit.sqlite"))
    written = set(audit[audit["outcome"] == "written"]["input_id"])
    assert written == {"pubsub:1", "pubsub:2"}
    assert heard[AUDIT] == set(messages)
    assert heard[ARCHIVE] == written
    assert heard[DEAD_LETTERS] == {"pubsub:4"}
    assert {i: d.acked for i, d in deliveries.items()} == dict.fromkeys(messages, 1)
    assert ledger.stats().in_flight == 0


GCP_ARGS = [
    "--sink=gcp",
    "--raw_root=gs://bucket/archive",
    "--bigquery_dataset=local-project.genai",
    "--audit_db_url=postgresql://h/db",
]


@pytest.mark.parametrize(
    ("extra", "reads_locally"),
    [([], True), (GCP_ARGS, False), (["--runner=BundleBasedDirectRunner"], False)],
    ids=["embedded", "gcp", "named-runner"],
)
def test_a_local_run_reads_pubsub_through_the_local_source_with_the_embedded_sinks(
    extra, reads_locally, tmp_path, monkeypatch
):
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    options = PipelineOptions(
        [
            "--source=pubsub",
            "--subscription=projects/local-project/subscriptions/s",
            f"--output_root={tmp_path}",
            *extra,
        ]
    )
    options.view_as(StandardOptions).streaming = True
    view = options.view_as(streaming.StreamingOptions)
    pipeline = beam.Pipeline(runner=LocalRunner(), options=options)
    _, source = build_locally(pipeline, options, view, streaming.build)
    labels = set()

    class Labels(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.add(node.full_label)

        def visit_transform(self, node):
            labels.add(node.full_label)

    pipeline.visit(Labels())
    assert ("PullGatewayEvents" in labels) is reads_locally
    assert ("ReadGatewayEvents" in labels) is not reads_locally
    assert isinstance(source, LocalPubsubSource) is reads_locally
    if reads_locally:
        assert not source.running  # building starts nothing
