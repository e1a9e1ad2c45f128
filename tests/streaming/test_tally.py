"""Run totals in a streaming pipeline (TestStream): partial totals folded across writes, and
the running totals' state keyed with a deterministic coder. The accumulator's merge rules are
in ``tests/functions/test_tally.py``."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines.local.tally import TallyOutcomes, read_tally
from tests.support.pipelines import local_pipeline

_WRITTEN: list[dict] = []  # what a streaming tally emitted: the DirectRunner runs in this process


def _record(totals: dict) -> None:
    _WRITTEN.append(totals)


def test_streaming_totals_fold_partials_across_writes_and_end_with_all_of_them(tmp_path):
    # every_s=0: the totals are written (folding the bag of partials into one) after every
    # partial, so later partials are folded into earlier folds; the last write, at the end of
    # the stream, must still count everything once.
    events = [b'{"n": %d}' % i for i in range(7)]
    stream = TestStream().advance_watermark_to(0)
    for i, event in enumerate(events):
        stream = stream.add_elements([TimestampedValue(event, i)])
        stream = stream.add_elements([TimestampedValue(("extra", 2), i)], tag="counts")
        stream = stream.advance_watermark_to(i + 1)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions([], streaming=True)
    _WRITTEN.clear()
    with local_pipeline(options) as pipeline:
        inputs = pipeline | stream
        tallies = {"read": inputs[None], "counts": inputs["counts"]} | TallyOutcomes(
            str(tmp_path), "t1", every_s=0
        )
        _ = tallies | beam.Map(_record)
    reads = [totals["read"] for totals in _WRITTEN]
    assert len(reads) > 1, reads  # folded more than once
    assert reads == sorted(reads) and reads[-1] == len(events), reads
    assert read_tally(str(tmp_path), "t1") == {
        "extra": 2 * len(events),
        "metrics.requests_counted": 0,
        "metrics.windows": 0,
        "read": len(events),
    }


def test_streaming_totals_key_their_state_with_a_deterministic_coder(tmp_path):
    # A stateful DoFn's key must encode deterministically; with an untyped input Beam falls
    # back to FastPrimitivesCoder and warns that the state may be keyed wrongly.
    options = PipelineOptions([], streaming=True)
    pipeline = local_pipeline(options)
    inputs = pipeline | TestStream().add_elements([b"{}"]).advance_watermark_to_infinity()
    _ = {"read": inputs} | TallyOutcomes(str(tmp_path), "t1")
    (stateful,) = [
        applied
        for applied in pipeline.to_runner_api().components.transforms.values()
        if applied.unique_name.endswith("RunningTotals")
    ]
    coders = pipeline.to_runner_api().components.coders
    pcollections = pipeline.to_runner_api().components.pcollections
    (input_id,) = stateful.inputs.values()
    kv = coders[pcollections[input_id].coder_id]
    assert kv.spec.urn == "beam:coder:kv:v1"
    key = coders[kv.component_coder_ids[0]]
    assert key.spec.urn == "beam:coder:string_utf8:v1", key.spec.urn
