"""The Google Cloud sinks' batches on unbounded input (TestStream): flushed on processing time
again and again (with ``RecordingSink``, ``tests/support/gcp_path.py``)."""

from __future__ import annotations

from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window

from pipelines.io.sinks.batches import WriteInBatches
from tests.support.gcp_path import RecordingSink, audit_records
from tests.support.pipelines import TestPipeline, streaming_options
from tests.support.sink_factories import T0


def test_streaming_batches_flush_on_processing_time_again_and_again(request):
    """Regression: AfterAny(AfterCount, AfterProcessingTime) fired once and never again."""
    sink = RecordingSink(request.node.name)
    records = audit_records(6)
    stream = TestStream().advance_watermark_to(T0.timestamp())
    for i in range(0, 6, 2):
        stream = stream.add_elements(
            [window.TimestampedValue(r, T0.timestamp()) for r in records[i : i + 2]]
        ).advance_processing_time(5)
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(options=streaming_options()) as p:
        _ = p | stream | WriteInBatches(sink, id_field="audit_id", flush_s=2, num_shards=1)
    batches = RecordingSink.written[request.node.name]
    assert len(batches) == 3, batches  # one per processing-time firing, not one at the end
    assert sorted(i for b in batches for i in b) == sorted(r.audit_id for r in records)
