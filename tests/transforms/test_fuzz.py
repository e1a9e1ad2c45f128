"""Fuzzing the composites: hostile input through ``AnalyzeEvents`` and the embedded sinks in a
pipeline. No exception escapes (the pipeline finishes), and every input is written, a duplicate
or a dead letter, exactly once. Few examples (each is a pipeline run); the plain-function fuzz
tests (tests/functions/test_fuzz.py) carry the volume."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that
from hypothesis import Phase, given, settings

from pipelines.io.sinks.embedded import WriteEmbedded
from tests.support.fuzz import archived_events, count_cases, gateway_lines
from tests.support.pipelines import TestPipeline
from tests.support.profiles import examples
from transforms.analyze import AnalyzeEvents, CoreConfig
from transforms.audit import flatten_audit
from transforms.elements import LineChunk

# Each example is a pipeline run: a failure is reported as found, not shrunk (minutes).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)

CONFIG = CoreConfig(dedupe_shards=4)


def _chunks(lines: list[bytes]) -> list[LineChunk]:
    """The lines as a file read in two chunks, with their byte offsets."""
    offsets, position = [], 0
    for line in lines:
        offsets.append(position)
        position += len(line) + 1
    half = (len(lines) + 1) // 2
    return [
        LineChunk("fuzz.jsonl", tuple(lines[:half]), tuple(offsets[:half])),
        LineChunk("fuzz.jsonl", tuple(lines[half:]), tuple(offsets[half:])),
    ]


def _tagged_counts(core, sinks) -> beam.PCollection:
    counts = [
        core.events | "CountWritten" >> beam.Map(lambda batch: ("written", len(batch.events))),
        core.duplicates | "CountDuplicates" >> beam.Map(lambda _: ("duplicates", 1)),
        core.conflicts | "CountConflicts" >> beam.Map(lambda _: ("conflicts", 1)),
        core.dead_letters | "CountDeadLetters" >> beam.Map(lambda _: ("dead_letters", 1)),
        flatten_audit(core.audit, "AllAudit") | "CountAudit" >> beam.Map(lambda _: ("audit", 1)),
        sinks.sink_dead_letters | "CountRowsLeftOut" >> beam.Map(lambda d: (d.reason, 1)),
    ]
    return [
        pcoll | f"Rewindow{i}" >> beam.WindowInto(beam.window.GlobalWindows())
        for i, pcoll in enumerate(counts)
    ] | beam.Flatten()


def _identity_holds(read: int, internal_errors_allowed: bool):
    def check(items):
        totals: dict[str, int] = {}
        for name, n in items:
            totals[name] = totals.get(name, 0) + n
        outcomes = totals.get("written", 0) + totals.get("duplicates", 0)
        outcomes += totals.get("conflicts", 0) + totals.get("dead_letters", 0)
        assert outcomes == read, totals
        assert totals.get("audit", 0) == read, totals
        left_out = {k for k in totals if k.startswith("internal_error")}
        assert internal_errors_allowed or not left_out, totals

    return check


@settings(max_examples=examples(0.002), phases=NO_SHRINK)
@given(gateway_lines(max_lines=12))
def test_analyze_events_and_the_embedded_sinks_account_for_every_line(tmp_path_factory, lines):
    count_cases("composites", len(lines))
    root = str(tmp_path_factory.mktemp("out"))
    with TestPipeline() as p:
        chunks = p | "Chunks" >> beam.Create(_chunks(lines))
        again = p | "ChunksAgain" >> beam.Create(_chunks(lines))
        core = chunks | AnalyzeEvents(CONFIG, input_format="json_lines", copies_from=again)
        sinks = core | WriteEmbedded(root)
        assert_that(_tagged_counts(core, sinks), _identity_holds(len(lines), False))


@settings(max_examples=examples(0.002), phases=NO_SHRINK)
@given(archived_events(max_events=12))
def test_an_archive_of_any_values_is_reconciled_without_failing(tmp_path_factory, events):
    """A reconciliation over archived events of any value their Avro types hold: the sinks take
    out what they cannot store, the metrics what they cannot count, and the run finishes."""
    count_cases("composites", len(events))
    root = str(tmp_path_factory.mktemp("out"))
    with TestPipeline() as p:
        archived = p | beam.Create(events) | beam.Map(_stamped)
        core = archived | AnalyzeEvents(CONFIG, input_format="redacted")
        sinks = core | WriteEmbedded(root, archive=False)
        assert_that(_tagged_counts(core, sinks), _identity_holds(len(events), True))


def _stamped(event):
    return beam.window.TimestampedValue(event, event.event_time.timestamp())
