"""No element can fail a bundle, step by step as plain functions: which errors are an element's,
how each per-element step turns one into an ``internal_error:<step>`` dead letter (the error
type, never a value; the payload redacted or omitted), window sums that cannot overflow, and
the sinks' isolation of the records they cannot encode."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import uuid

import fastavro
import psycopg
import pytest
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming
from google.api_core import exceptions as api_exceptions

from pipelines.io.sinks.embedded.audit import unencodable_audit_records
from pipelines.io.sinks.embedded.warehouse import unencodable_metric_rows
from pipelines.io.sinks.files import avro_record, encode_avro_files, write_avro_files
from pipelines.io.sinks.gcp.bigquery import AuditAppendSink, MetricsMergeSink
from pipelines.io.sinks.gcp.postgres import unencodable_audit_rows
from schemas.contract import parsed_schema
from tests.support.core_inputs import T0, raw
from tests.support.factories import redacted_event
from tests.support.fuzz import _outputs
from tests.support.sink_factories import audit_record, dead_letter, metric_row
from transforms import parse, redact
from transforms.aggregate import INT64_MAX, _FormatMetricRowFn, _MetricsCombineFn, _PreCombineFn
from transforms.deadletter import (
    DEAD_LETTER_TAG,
    internal_error_reason,
    is_element_error,
    storable_dead_letter,
)
from transforms.dedupe import _KeyByEventIdFn, _SplitByCopiesFn, _SplitByShardFn
from transforms.elements import EventBatch, LineChunk, ParsedBatch
from transforms.parse import ParseLimits, _ParseChunkFn, parse_event
from transforms.pii.dlp_client import DlpServiceError
from transforms.pii.settings import RedactionSettings
from transforms.pricing.table import DEFAULT_PRICE_TABLE, load_price_table

SETTINGS = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
LIMITS = ParseLimits(now=T0 + dt.timedelta(minutes=10))
SECRET = "4111 1111 1111 1111"  # a value an error message might quote


@pytest.mark.parametrize(
    ("error", "element"),
    [
        (ValueError("x"), True),
        (OverflowError("x"), True),
        (RecursionError("x"), True),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"), True),
        (KeyError("x"), True),
        (OSError("disk"), False),
        (ConnectionError("reset"), False),
        (TimeoutError("slow"), False),
        (MemoryError(), False),
        (KeyboardInterrupt(), False),
        (api_exceptions.ServiceUnavailable("down"), False),
        (DlpServiceError("permission denied"), False),
        (psycopg.OperationalError("server closed"), False),
        (sqlite3.OperationalError("database is locked"), False),
    ],
)
def test_an_error_is_the_elements_unless_the_environment_caused_it(error, element):
    assert is_element_error(error) is element


def _parse(lines, replay=False):
    fn = _ParseChunkFn(LIMITS, SETTINGS, replay)
    fn.setup()
    chunk = LineChunk("in.jsonl", tuple(lines), tuple(range(len(lines))))
    return _outputs(fn.process(chunk))


def test_an_unexpected_parse_error_is_that_lines_dead_letter(monkeypatch):
    def failing(line, **kwargs):
        if b"R-2" in line:
            raise OverflowError(f"value {SECRET} out of range")
        return parse_event(line, **kwargs)

    monkeypatch.setattr(parse, "parse_event", failing)
    out = _parse([raw(1), raw(2, user_id="alice.smith@example.com")])
    (batch,) = out[None]
    assert [e.request_id for e in batch.events] == ["R-1"]
    (letter,) = out[DEAD_LETTER_TAG]
    assert (letter.reason, letter.step, letter.error_type) == (
        "internal_error:parse",
        "parse",
        "OverflowError",
    )
    assert SECRET not in letter.error_message and "OverflowError" in letter.error_message
    assert letter.payload_state == "redacted" and "alice.smith" not in letter.payload
    assert letter.input_id == "in.jsonl#1"


def test_an_environment_error_in_parse_still_fails_the_bundle(monkeypatch):
    def failing(line, **kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(parse, "parse_event", failing)
    with pytest.raises(OSError):
        _parse([raw(1)])


def test_a_payload_that_cannot_be_redacted_is_omitted_not_a_failure(monkeypatch):
    def failing(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(parse, "redact_payload", failing)
    out = _parse([raw(1, latency_ms=-1)])
    (letter,) = out[DEAD_LETTER_TAG]
    assert (letter.reason, letter.payload_state, letter.payload) == (
        "negative_value:latency_ms",
        "omitted",
        None,
    )


def test_a_deeply_nested_rejected_line_is_a_dead_letter():
    line = b'{"event_id": 1, "deep": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"
    (letter,) = _parse([line])[DEAD_LETTER_TAG]
    assert letter.reason.startswith(("bad_type:", "invalid_json", "missing_field:"))
    assert letter.payload_state in ("redacted", "omitted")


def _redact(events):
    fn = redact._RedactBatchFn(SETTINGS, "builtin:classification.yaml", 64)
    fn.setup()
    return _outputs(fn.process(ParsedBatch("in", tuple(events))))


def _events(*numbers, **changes):
    return [parse_event(raw(n, **changes), now=LIMITS.now, limits=LIMITS) for n in numbers]


def test_an_unexpected_redaction_error_is_that_events_dead_letter(monkeypatch):
    original = redact.classify

    def failing(policy, **kwargs):
        if "boom" in kwargs["policy_flags"]:
            raise ZeroDivisionError(SECRET)
        return original(policy, **kwargs)

    monkeypatch.setattr(redact, "classify", failing)
    events = _events(1, 2) + _events(3, policy_flags=["boom"]) + _events(4)
    out = _redact(events)
    (batch,) = out[None]
    assert [e.request_id for e in batch.events] == ["R-1", "R-2", "R-4"]
    (letter,) = out[DEAD_LETTER_TAG]
    assert (letter.reason, letter.error_type, letter.request_id) == (
        "internal_error:redact",
        "ZeroDivisionError",
        "R-3",
    )
    assert SECRET not in letter.error_message
    assert '"prompt"' not in letter.payload and "user-alice" not in letter.payload


def test_an_engine_service_error_still_fails_the_bundle(monkeypatch):
    def failing(*args, **kwargs):
        raise DlpServiceError("permission denied")

    monkeypatch.setattr(redact, "redact_each", failing)
    with pytest.raises(DlpServiceError):
        _redact(_events(1))


def _broken_time(event_id):
    # An event time that is not an aware datetime: no parse or archive makes one.
    return redacted_event(event_id=event_id, event_time=dt.datetime(2026, 1, 27, 10, 0))


@pytest.mark.parametrize(
    "step",
    [
        lambda batch: _SplitByShardFn(4).process(batch),
        lambda batch: _KeyByEventIdFn().process(batch),
        lambda batch: _ready(_SplitByCopiesFn()).process(batch, {}),
    ],
    ids=["sharded-and-batch", "per-key", "chosen-copies"],
)
def test_an_event_the_dedupe_cannot_key_is_a_dead_letter(step):
    good, bad = redacted_event(event_id="good"), _broken_time("bad")
    out = _outputs(step(EventBatch("in", (good, bad), (0, 1))))
    (letter,) = out[DEAD_LETTER_TAG]
    assert (letter.reason, letter.event_id, letter.error_type) == (
        "internal_error:dedupe",
        "bad",
        "TypeError",
    )
    assert '"user_id":{"pseudonym":"user-key-0001"}' in letter.payload  # replayable
    kept = [e.event_id for item in out[None] for e in _events_of(item)]
    assert kept == ["good"]


def _ready(fn):
    fn.setup()
    return fn


def _events_of(item):
    if isinstance(item, EventBatch):
        return item.events
    _, value = item
    return value.events if isinstance(value, EventBatch) else [value]


def _precombine(events):
    fn = _PreCombineFn(60, load_price_table(DEFAULT_PRICE_TABLE))
    fn.setup()
    fn.start_bundle()
    return _outputs([*fn.process(EventBatch("in", tuple(events))), *fn.finish_bundle()])


def test_an_event_the_combiner_cannot_add_is_left_out_and_the_window_stays_exact():
    # Archived before the contract bounded latency: the sketch cannot index it.
    events = [
        redacted_event(event_id="a", token_count=10),
        redacted_event(event_id="huge", latency_ms=1.79e308, token_count=1000),
        redacted_event(event_id="b", token_count=20, user_key="other"),
        redacted_event(event_id="alone", latency_ms=float("inf"), model="only-this-one"),
    ]
    out = _precombine(events)
    assert sorted(d.event_id for d in out[DEAD_LETTER_TAG]) == ["alone", "huge"]
    assert {d.reason for d in out[DEAD_LETTER_TAG]} == {internal_error_reason("aggregate")}
    ((key, accumulator),) = out[None]  # no partial at all for the window of "alone"
    assert key[:2] == ("gemini-2.5-pro", "europe-west1")
    assert (accumulator.request_count, accumulator.token_sum) == (2, 30)
    assert sum(accumulator.latency_counts.values()) == 2
    assert round(accumulator.users.get_estimate()) == 2


def _format(totals):
    fn = _FormatMetricRowFn("backfill", load_price_table(DEFAULT_PRICE_TABLE))
    fn.setup()
    start = Timestamp.from_utc_datetime(T0)
    window = IntervalWindow(start, start + 60)
    pane = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
    return _outputs(fn.process((("gpt-4o-mini", "us", start.micros), totals), window, pane))


def test_window_sums_saturate_at_the_int64_maximum():
    combine = _MetricsCombineFn()
    accumulator = combine.create_accumulator()
    for i in range(2):  # two events of 2**63-1 tokens in one window (an archive before bounds)
        event = redacted_event(event_id=str(i), token_count=INT64_MAX, prompt_tokens=None)
        combine.add_input(accumulator, _usage(event))
    (row,) = _format(combine.extract_output(accumulator))[None]
    assert row.token_sum == row.unsplit_token_sum == INT64_MAX
    assert row.request_count == 2
    fastavro.schemaless_writer(io.BytesIO(), parsed_schema("metric_row"), avro_record(row))
    assert not unencodable_metric_rows([row])


def _usage(event):
    from transforms.aggregate import _key_by_model_region

    return _key_by_model_region(event)[1]


def test_a_row_that_cannot_be_formatted_is_a_dead_letter():
    combine = _MetricsCombineFn()
    totals = combine.extract_output(combine.create_accumulator())._replace(token_sum="many")
    out = _format(totals)
    assert out[None] == []
    (letter,) = out[DEAD_LETTER_TAG]
    assert (letter.reason, letter.error_type) == ("internal_error:aggregate", "TypeError")


# --- sinks: only the records that cannot be encoded are taken out --------------------------


def test_avro_takes_out_only_the_records_it_cannot_encode(tmp_path):
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(4)]
    events = [redacted_event(event_id=event_id) for event_id in ids]
    events[2] = events[2]._replace(token_count=2**64)  # beyond an Avro long
    records = [avro_record(e) for e in events]
    files, rejected = encode_avro_files(
        records, schema_name="redacted_event", id_field="event_id", max_records=3
    )
    assert list(rejected) == [2]
    stored = [r["event_id"] for f in files for r in fastavro.reader(io.BytesIO(f.data))]
    assert sorted(str(event_id) for event_id in stored) == [ids[0], ids[1], ids[3]]
    with pytest.raises(ValueError, match="do not match the schema"):
        write_avro_files(
            str(tmp_path), records, schema_name="redacted_event", id_field="event_id", max_records=3
        )
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_each_table_names_the_rows_it_cannot_hold():
    audits = [audit_record(event_id="a"), audit_record(event_id="b", request_id="x\ud800")]
    assert list(unencodable_audit_records(audits)) == [1]
    rows = [metric_row(), metric_row(token_sum=2**64), metric_row(model=None)]
    assert sorted(unencodable_metric_rows(rows)) == [1, 2]
    assert list(MetricsMergeSink("p.d").unencodable(rows)) == [1, 2]
    nan = metric_row(latency_p50_ms=float("nan"))
    assert list(MetricsMergeSink("p.d").unencodable([metric_row(), nan])) == [1]
    assert list(AuditAppendSink("p.d").unencodable(audits)) == [1]
    nul = audit_record(event_id="c", request_id="a\x00b")
    assert list(unencodable_audit_rows([audits[0], nul, audits[1]])) == [1, 2]
    assert not unencodable_audit_records([nul])  # SQLite stores a NUL; PostgreSQL does not


def test_a_dead_letter_that_cannot_be_stored_is_stored_in_its_storable_form():
    letter = dead_letter()._replace(request_id="r\ud800", payload='{"x": "\ud800"}')
    stored = storable_dead_letter(letter)
    assert (stored.request_id, stored.payload, stored.payload_state) == ("r\ufffd", None, "omitted")
    assert stored.dead_letter_id == letter.dead_letter_id
    assert storable_dead_letter(dead_letter()) == dead_letter()


def test_the_first_pass_of_a_backfill_skips_a_line_parsing_fails_on(monkeypatch):
    from transforms import copies

    def failing(line, **kwargs):
        if b"R-2" in line:
            raise OverflowError(SECRET)
        return parse_event(line, **kwargs)

    monkeypatch.setattr(copies, "parse_event", failing)
    fn = copies._CandidatesFn(LIMITS, "env:GENAI_PSEUDONYM_KEY", replay=False, num_shards=1)
    fn.setup()
    lines = (raw(1), raw(1, request_id="R-2"), raw(1, request_id="R-3"))
    outputs = fn.process(LineChunk("in", lines, (0, 10, 20)))
    ((_, seen),) = [out for out in outputs if isinstance(out, tuple)]
    ((_, (count, _, candidate)),) = seen.items()
    assert count == 2 and candidate[1] == "in#0"  # the line parsing failed on is not a copy
