"""The core composite on scripted streams (TestStream): on time then late within the lateness,
late beyond it, duplicates in the same and across windows with malformed input mixed in, an
early pane on processing time. Fixed input is in ``tests/transforms/test_analyze.py``."""

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.support.analyze import CONFIG, metric_view
from tests.support.core_inputs import T0_S, event_id, raw
from tests.support.factories import events_of
from tests.support.pipelines import TestPipeline, streaming_options
from transforms.analyze import AnalyzeEvents
from transforms.audit import flatten_audit


def _stream(*steps):
    stream = TestStream()
    for kind, value in steps:
        if kind == "watermark":
            stream = stream.advance_watermark_to(T0_S + value)
        elif kind == "clock":
            stream = stream.advance_processing_time(value)
        else:
            stream = stream.add_elements([TimestampedValue(value, T0_S)])
    return stream.advance_watermark_to_infinity()


def run_stream(stream, config=CONFIG):
    p = TestPipeline(options=streaming_options())
    out = p | stream | AnalyzeEvents(config)
    return p, out


def test_stream_on_time_then_late_within_lateness_updates_the_window():
    stream = _stream(
        ("watermark", 0),
        ("event", raw(1, offset_s=5)),
        ("event", raw(2, offset_s=10)),
        ("watermark", 61),  # window [0, 60) closes: ON_TIME pane of 2
        ("event", raw(3, offset_s=20)),  # late, within the 300 s lateness
        ("watermark", 120),
    )
    p, out = run_stream(stream)
    assert_that(
        out.metrics | beam.Map(metric_view),
        equal_to(
            [
                (0.0, "gpt-4o-mini", "us", 2, 30, "ON_TIME"),
                (0.0, "gpt-4o-mini", "us", 3, 60, "LATE"),  # accumulating: the whole window
            ]
        ),
    )
    p.run().wait_until_finish()


def test_stream_late_beyond_lateness_is_archived_but_not_in_metrics():
    stream = _stream(
        ("watermark", 0),
        ("event", raw(1, offset_s=5)),
        ("watermark", 1000),  # past window end + 300 s lateness
        ("event", raw(2, offset_s=10)),  # too late for the metrics
        ("watermark", 1100),
    )
    p, out = run_stream(stream)
    assert_that(
        out.metrics | "m" >> beam.Map(metric_view),
        equal_to([(0.0, "gpt-4o-mini", "us", 1, 10, "ON_TIME")]),
        label="metrics",
    )
    assert_that(
        events_of(out.events, "Unbatch4") | "e" >> beam.Map(lambda e: e.event_id),
        equal_to([event_id(1), event_id(2)]),
        label="still written",
    )
    assert_that(
        flatten_audit(out.audit, "AllAudit") | "a" >> beam.Map(lambda a: (a.outcome, a.event_id)),
        equal_to([("written", event_id(1)), ("written", event_id(2))]),
        label="still audited",
    )
    p.run().wait_until_finish()


def test_stream_duplicates_in_same_and_across_windows_and_malformed_mixed_in():
    stream = _stream(
        ("watermark", 0),
        ("event", raw(1, offset_s=5)),
        ("event", raw(1, offset_s=5)),  # same window
        ("event", b"not json at all"),
        ("event", raw(2, offset_s=30)),
        ("event", raw(2, offset_s=90)),  # retried and re-stamped: next window, a conflict
        ("event", raw(3, offset_s=70, token_count=-3)),
        ("watermark", 200),
    )
    p, out = run_stream(stream)
    assert_that(
        out.metrics | "m" >> beam.Map(metric_view),
        equal_to([(0.0, "gpt-4o-mini", "us", 2, 30, "ON_TIME")]),
        label="metrics count each event once",
    )
    assert_that(
        out.duplicates | "d" >> beam.Map(lambda e: (e.event_id, e.event_time.second)),
        equal_to([(event_id(1), 5)]),
        label="duplicates",
    )
    assert_that(
        out.conflicts | "c" >> beam.Map(lambda e: (e.event_id, e.event_time.second)),
        equal_to([(event_id(2), 30)]),  # 90 s after T0: second 30 of the next minute
        label="conflicts: same id, other content, neither archived nor counted",
    )
    assert_that(
        out.dead_letters | "dl" >> beam.Map(lambda d: d.reason),
        equal_to(["invalid_json", "negative_value:token_count"]),
        label="dead letters",
    )
    p.run().wait_until_finish()


def test_stream_early_pane_on_processing_time():
    stream = _stream(
        ("watermark", 0),
        ("event", raw(1, offset_s=5)),
        ("clock", 31),  # early firing after 30 s of processing time
        ("event", raw(2, offset_s=6)),
        ("watermark", 61),
    )
    p, out = run_stream(stream)
    assert_that(
        out.metrics | beam.Map(metric_view),
        equal_to(
            [
                (0.0, "gpt-4o-mini", "us", 1, 10, "EARLY"),
                (0.0, "gpt-4o-mini", "us", 2, 30, "ON_TIME"),
            ]
        ),
    )
    p.run().wait_until_finish()
