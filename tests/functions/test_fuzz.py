"""Fuzzing the core as plain functions: hostile input through parse -> redact -> dedupe ->
aggregate -> every sink's encoder never raises, and every input line is accounted for.

The steps are the pipeline's own DoFns, called as functions (``tests.support.fuzz.run_core``).
Budgets follow the hypothesis profile (``tests.support.profiles``): ``make test`` runs a few
hundred examples, ``make fuzz`` tens of thousands, carrying over 100,000 generated inputs (most
of them here); the session ends with the count (``count_cases``).
"""

from __future__ import annotations

import io

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.io.sinks.embedded.audit import unencodable_audit_records
from pipelines.io.sinks.files import avro_record, encode_avro_files
from pipelines.io.sinks.gcp.bigquery import AuditAppendSink, MetricsMergeSink
from pipelines.io.sinks.gcp.postgres import unencodable_audit_rows
from schemas.contract import parsed_schema
from tests.support.fuzz import (
    NOW,
    archived_events,
    count_cases,
    encode_for_every_sink,
    gateway_lines,
    run_core,
    run_downstream,
)
from tests.support.profiles import examples
from tests.support.sink_factories import audit_record, dead_letter
from transforms.deadletter import InvalidEvent, storable_dead_letter
from transforms.parse import ParseLimits, parse_event

_LIMITS = ParseLimits(now=NOW)
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)


@settings(max_examples=examples(1.0))
@given(gateway_lines(max_lines=30))
def test_parse_event_returns_an_event_or_raises_invalid_event(lines):
    """The contract's function itself: any bytes are an event or a rejection with a reason."""
    count_cases("functions", len(lines))
    for line in lines:
        try:
            event = parse_event(line, now=NOW, limits=_LIMITS)
        except InvalidEvent as error:
            assert error.reason and error.message
        else:
            assert 0 <= event.token_count <= 100_000_000
            assert 0 <= event.latency_ms <= 86_400_000


@settings(max_examples=examples(1.2))
@given(gateway_lines())
def test_every_line_is_written_a_duplicate_or_a_dead_letter(lines):
    count_cases("functions", len(lines))
    run = run_core(lines)
    assert run.balanced, (run.read, len(run.written), len(run.duplicates), len(run.dead_letters))
    # Input the contract accepts never trips a step: no internal errors, no event left out,
    # and every record encodes for every sink.
    assert not [d.reason for d in run.dead_letters if d.reason.startswith("internal_error")]
    assert not run.left_out
    assert not +encode_for_every_sink(run)
    assert sum(row.request_count for row in run.rows) == len(run.written)
    assert len(run.audit) == run.read


@settings(max_examples=examples(0.4))
@given(archived_events())
def test_archived_events_of_any_value_are_accounted_for(events):
    """What an old archive may hold (any long, any double, any valid text) through dedupe,
    aggregation and the encoders: events left out are dead letters, sums are saturated."""
    count_cases("functions", len(events))
    run = run_downstream(events)
    assert run.balanced
    counted = sum(row.request_count for row in run.rows)
    assert counted + len(run.left_out) == len(run.written)
    for row in run.rows:
        assert -(2**63) <= row.token_sum <= 2**63 - 1
        assert 0 < row.request_count <= 2**63 - 1
    refused = encode_for_every_sink(run)
    assert set(refused) <= {"avro_archive", "postgres"}
    assert not MetricsMergeSink("p.d").unencodable(run.rows)  # what DuckDB takes too (Arrow)


@settings(max_examples=examples(1.2))
@given(
    st.lists(
        st.builds(
            lambda rid, user, reason, counts: audit_record(
                request_id=rid, user_key=user, reason=reason, redaction_counts=counts
            ),
            _ANY_TEXT,
            st.one_of(st.none(), _ANY_TEXT),
            st.one_of(st.none(), _ANY_TEXT),
            st.dictionaries(_ANY_TEXT, st.integers(), max_size=2),
        ),
        min_size=1,
        max_size=16,
    )
)
def test_each_sink_names_exactly_the_audit_records_it_cannot_take(records):
    """Whatever an audit record holds, each sink's check agrees with its writer: a record it
    accepts is written, one it refuses fails the writer (so it is taken out, not retried)."""
    count_cases("functions", len(records))
    sqlite_refused = unencodable_audit_records(records)
    for position, record in enumerate(records):
        alone = unencodable_audit_records([record])
        assert bool(alone) == (position in sqlite_refused)
    bigquery = AuditAppendSink("p.d").unencodable(records)
    postgres = unencodable_audit_rows(records)
    for position, record in enumerate(records):
        texts = [record.request_id, record.user_key, record.reason, *record.redaction_counts]
        unicode = all(t is None or _is_valid_unicode(t) for t in texts)
        in_int64 = all(-(2**63) <= n < 2**63 for n in record.redaction_counts.values())
        assert (position not in bigquery) == (unicode and in_int64)
        no_nul = all(t is None or "\x00" not in t for t in texts)
        assert (position not in postgres) == (unicode and in_int64 and no_nul)


def _is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_DEAD_LETTERS = st.builds(
    lambda event_id, request_id, message, payload, input_id: dead_letter()._replace(
        event_id=event_id,
        request_id=request_id,
        error_message=message,
        payload=payload,
        input_id=input_id,
    ),
    st.one_of(st.none(), _ANY_TEXT),
    st.one_of(st.none(), _ANY_TEXT),
    _ANY_TEXT,
    st.one_of(st.none(), _ANY_TEXT),
    st.one_of(st.none(), _ANY_TEXT),
)


@settings(max_examples=examples(1.0))
@given(st.lists(_DEAD_LETTERS, min_size=1, max_size=8))
def test_a_dead_letter_is_always_storable(letters):
    """Dead letters have nowhere further to go: their storable form always encodes, keeps the
    id, and keeps the payload exactly or omits it."""
    count_cases("functions", len(letters))
    schema = parsed_schema("dead_letter")
    for letter in letters:
        stored = storable_dead_letter(letter)
        fastavro.schemaless_writer(io.BytesIO(), schema, avro_record(stored), strict=True)
        assert stored.dead_letter_id == letter.dead_letter_id
        assert stored.payload in (letter.payload, None)
    files, rejected = encode_avro_files(
        [avro_record(storable_dead_letter(letter)) for letter in letters],
        schema_name="dead_letter",
        id_field="dead_letter_id",
        max_records=10,
    )
    assert not rejected and sum(f.count for f in files) == len(letters)
