"""Fuzzing: generators of hostile input, and the core run as plain functions.

Generators write input as the world writes it, not as the contract wants it: ``gateway_lines``
gives JSON lines shaped like gateway events whose every field may be extreme or wrong (numbers of
any size, any Unicode, lone surrogates, duplicate keys, deep nesting, huge arrays), arbitrary
JSON, and bytes that are not UTF-8; ``archived_events`` gives ``RedactedEvent`` elements with
any value their Avro types hold (what an archive written before the contract's bounds may
contain). The budgets come from the profiles in ``tests.support.profiles``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import uuid
from collections import Counter, defaultdict
from typing import Any, NamedTuple

import fastavro
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue
from hypothesis import strategies as st

from pipelines.io.sinks.embedded.audit import _insert_statements, audit_row, audit_table_ddl
from pipelines.io.sinks.embedded.warehouse import metric_rows_to_arrow
from pipelines.io.sinks.files import avro_record, encode_avro_files
from pipelines.io.sinks.gcp.bigquery import _rows_parameter, audit_json_row
from pipelines.io.sinks.gcp.postgres import _row as postgres_row
from pipelines.io.sinks.gcp.postgres import unencodable_audit_rows
from schemas.contract import parsed_schema
from transforms.aggregate import _FormatMetricRowFn, _MergePartialsFn, _PreCombineFn
from transforms.audit import DUPLICATE, DUPLICATE_CONFLICT, WRITTEN, audit_dead_letter, audit_event
from transforms.deadletter import DEAD_LETTER_TAG, record_json, storable_dead_letter
from transforms.dedupe import CONFLICT_TAG, DUPLICATE_TAG, _DedupeGroupFn, _SplitByShardFn
from transforms.elements import (
    AuditRecord,
    DeadLetter,
    EventBatch,
    LineChunk,
    MetricRow,
    ParsedBatch,
    RedactedEvent,
)
from transforms.grammar import MAX_POLICY_FLAGS
from transforms.parse import ParseLimits, _ParseChunkFn
from transforms.pii.settings import RedactionSettings
from transforms.pricing.table import DEFAULT_PRICE_TABLE, load_price_table
from transforms.redact import _RedactBatchFn

__all__ = [
    "CASES",
    "NOW",
    "CoreRun",
    "archived_events",
    "count_cases",
    "encode_for_every_sink",
    "gateway_lines",
    "run_core",
    "run_downstream",
]

# The clock of every parse here: batch runs pin theirs too.
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


# Generated inputs (lines, events, records) fed through the code under test, by layer: what a
# fuzz run counts as its cases (printed at the end of the session, tests/conftest.py).
CASES: Counter = Counter()


def count_cases(layer: str, n: int) -> None:
    CASES[layer] += n


# --- generators ----------------------------------------------------------------------------


def _rarely(rare: st.SearchStrategy, usual: st.SearchStrategy) -> st.SearchStrategy:
    """``rare`` one time in twenty, else ``usual``: for the costly shapes (huge, deep)."""
    return st.integers(0, 19).flatmap(lambda i: rare if i == 0 else usual)


# Any character, lone surrogates included (JSON can escape them; UTF-8 cannot encode them).
_ANY_CHAR = st.characters(codec=None, exclude_categories=())
_ANY_TEXT = st.text(_ANY_CHAR, max_size=40)
_PII = st.sampled_from(
    [
        "alice.smith@example.com",
        "+44 20 7946 0958",
        "4111 1111 1111 1111",
        "123-45-6789",
        "203.0.113.77",
        "AKIAIOSFODNN7EXAMPLE",
    ]
)
_TEXTS = st.one_of(
    _ANY_TEXT,
    st.lists(st.one_of(_PII, st.text(max_size=12)), max_size=6).map(" ".join),
)
_EVENT_IDS = st.sampled_from([str(uuid.UUID(int=n, version=4)) for n in range(1, 6)])
_HUGE = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63)])
_INTEGERS = st.one_of(st.integers(0, 10_000), st.integers(), _HUGE)
# Numbers as JSON text: what json.dumps cannot write too (1e999 is infinity to a parser).
_NUMBER_TEXTS = st.one_of(
    _INTEGERS.map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e999", "1.79e308", "4.9e-324", "-0", "0.0", "1E400", "1e-400"]),
)
_TIMES = st.one_of(
    st.datetimes(
        min_value=dt.datetime(2014, 12, 31),
        max_value=dt.datetime(2026, 6, 2),
        timezones=st.just(dt.UTC),
    ).map(lambda t: t.isoformat().replace("+00:00", "Z")),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "1900-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "2026-01-27T12:00:00",
            "2026-13-45T99:00:00Z",
            "",
        ]
    ),
    _ANY_TEXT,
)
_HUGE_ARRAY = st.integers(0, 60_000).map(
    lambda n: _Raw("[" + ",".join(f'"f{i}"' for i in range(n)) + "]")
)  # written as text: drawing 60k elements one by one would be slow
_FLAGS = _rarely(
    _HUGE_ARRAY,
    st.one_of(
        st.lists(
            st.sampled_from(["pii_redacted", "jailbreak_suspected", "secret_detected"]), max_size=4
        ),
        st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,8}", fullmatch=True),
            max_size=MAX_POLICY_FLAGS + 2,
        ),
        st.lists(_ANY_TEXT, max_size=4),
    ),
)


class _Raw(str):
    """JSON text to be written as it is (not quoted)."""


def _json_text(value: Any, ascii_only: bool) -> str:
    """``value`` as JSON text: ``_Raw`` as it is, a list of pairs as an object (duplicate keys
    allowed), anything else as json.dumps writes it."""
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        members = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}:{_json_text(v, ascii_only)}"
            for k, v in value
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _nested(depth: int, leaf: str = "1") -> _Raw:
    return _Raw("[" * depth + leaf + "]" * depth)


_ANY_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBER_TEXTS.map(_Raw), _ANY_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(_ANY_TEXT, inner), min_size=1, max_size=4),
    ),
    max_leaves=12,
)

_FIELDS: dict[str, Any] = {
    "event_id": st.one_of(_EVENT_IDS, _EVENT_IDS, st.uuids().map(str), _ANY_TEXT),
    "request_id": st.one_of(st.from_regex(r"R-[0-9]{1,6}", fullmatch=True), _ANY_TEXT),
    "user_id": st.one_of(st.sampled_from(["U-1", "U-2", "alice.smith@example.com"]), _ANY_TEXT),
    "event_time": _TIMES,
    "model": st.one_of(st.sampled_from(["gpt-4o-mini", "claude-3-5-sonnet@20240620"]), _ANY_TEXT),
    "model_version": st.one_of(st.none(), st.just("2024-07-18"), _ANY_TEXT),
    "latency_ms": _NUMBER_TEXTS.map(_Raw),
    "token_count": st.one_of(_INTEGERS.map(str).map(_Raw), _NUMBER_TEXTS.map(_Raw)),
    "prompt_tokens": st.one_of(st.none(), _INTEGERS.map(str).map(_Raw)),
    "completion_tokens": st.one_of(st.none(), _INTEGERS.map(str).map(_Raw)),
    "region": st.one_of(st.sampled_from(["us", "eu", "europe-west1", "US", "us\n"]), _ANY_TEXT),
    "schema_version": st.sampled_from([1, "1", None, "1.0", "1.1", 2, True, " 1 "]),
    "policy_flags": _FLAGS,
    "prompt": st.one_of(st.none(), _TEXTS),
    "response": st.one_of(st.none(), _TEXTS),
}
_REQUIRED = (
    "event_id",
    "request_id",
    "user_id",
    "event_time",
    "model",
    "latency_ms",
    "token_count",
    "region",
)


@st.composite
def _event_line(draw) -> bytes:
    """An event-shaped object: each field valid or not, some dropped or repeated, extra fields
    (deeply nested, huge, any JSON), written as ASCII or UTF-8 JSON."""
    members: list[tuple[str, Any]] = []
    for name, values in _FIELDS.items():
        optional = name not in _REQUIRED
        if draw(st.integers(0, 19)) == 0 or (optional and draw(st.booleans())):
            continue  # missing
        members.append((name, draw(values)))
        if draw(st.integers(0, 29)) == 0:
            members.append((name, draw(values)))  # a duplicate key: the last one wins
    if draw(st.integers(0, 9)) == 0:
        members.append((draw(_ANY_TEXT), draw(_ANY_JSON)))
    if draw(st.integers(0, 19)) == 0:
        members.append(("extra", _nested(draw(st.integers(1, 6000)))))
    members = draw(st.permutations(members)) if draw(st.integers(0, 4)) == 0 else members
    ascii_only = draw(st.booleans())
    text = _json_text(members or [("", None)], ascii_only)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8


@st.composite
def _mangled(draw, lines) -> bytes:
    """A line with bytes replaced, inserted or cut: broken encodings, truncated JSON."""
    line = bytearray(draw(lines))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(line)))
        byte = draw(st.integers(0, 255))
        if draw(st.booleans()) and at < len(line):
            line[at] = byte
        else:
            line.insert(at, byte)
    if draw(st.integers(0, 4)) == 0:
        line = line[: draw(st.integers(0, len(line)))]
    return bytes(line)


def _single_line(text: bytes) -> bytes:
    # One input line never holds a newline (the reader splits on them).
    return text.replace(b"\n", b" ").replace(b"\r", b" ")


def gateway_lines(max_lines: int = 6) -> st.SearchStrategy[list[bytes]]:
    """Lists of input lines: mostly event-shaped (so many reach the later steps), plus
    arbitrary JSON, deep nesting, mangled lines and any bytes; one may start with a BOM."""
    line = _rarely(
        st.integers(1, 8000).map(lambda d: _nested(d).encode()),
        st.one_of(
            _event_line(),
            _event_line(),
            _event_line(),
            _ANY_JSON.map(lambda v: _json_text(v, True).encode()),
            _mangled(_event_line()),
            st.binary(max_size=64),
        ),
    ).map(_single_line)
    return st.lists(line, min_size=1, max_size=max_lines).flatmap(
        lambda lines: st.sampled_from([lines, [b"\xef\xbb\xbf" + lines[0], *lines[1:]]])
    )


_LONGS = st.one_of(st.integers(0, 10**9), st.integers(-(2**63), 2**63 - 1), st.just(2**63 - 1))
_DOUBLES = st.one_of(
    st.floats(0, 86_400_000), st.floats(), st.sampled_from([1.79e308, float("inf"), 0.0])
)
_VALID_TEXT = st.text(max_size=30)  # what an Avro string holds: no lone surrogates


@st.composite
def _archived_event(draw) -> RedactedEvent:
    event_time = draw(
        st.datetimes(
            min_value=dt.datetime(1970, 1, 1),
            max_value=dt.datetime(2200, 1, 1),
            timezones=st.just(dt.UTC),
        )
    )
    maybe = st.one_of(st.none(), _LONGS)
    return RedactedEvent(
        event_id=draw(st.one_of(_EVENT_IDS, _VALID_TEXT)),
        request_id=draw(_VALID_TEXT),
        user_key=draw(st.one_of(st.sampled_from(["k1", "k2"]), _VALID_TEXT)),
        event_time=event_time,
        event_date=event_time.date(),
        schema_version="1",
        model=draw(st.one_of(st.sampled_from(["gpt-4o-mini", "m"]), _VALID_TEXT)),
        model_version=draw(st.one_of(st.none(), _VALID_TEXT)),
        latency_ms=draw(_DOUBLES),
        token_count=draw(_LONGS),
        prompt_tokens=draw(maybe),
        completion_tokens=draw(maybe),
        policy_flags=tuple(draw(st.lists(_VALID_TEXT, max_size=4))),
        region=draw(st.one_of(st.sampled_from(["us", "eu"]), _VALID_TEXT)),
        prompt=draw(st.one_of(st.none(), _VALID_TEXT)),
        response=draw(st.one_of(st.none(), _VALID_TEXT)),
        data_class=draw(st.one_of(st.just("INTERNAL"), _VALID_TEXT)),
        redaction_counts=draw(st.dictionaries(_VALID_TEXT, _LONGS, max_size=3)),
        unknown_field_count=draw(st.integers(0, 2**31 - 1)),
        redaction_engine="offline",
        policy_version="1",
        processed_at=event_time,
    )


def archived_events(max_events: int = 8) -> st.SearchStrategy[list[RedactedEvent]]:
    """Lists of ``RedactedEvent`` with any value their Avro types hold (copies of ids too)."""
    return st.lists(_archived_event(), min_size=1, max_size=max_events)


# --- the core as plain functions -----------------------------------------------------------


def _outputs(results) -> dict[str, list]:
    """A DoFn's outputs by tag (``None``: the main output), unwrapped."""
    by_tag: dict[str, list] = defaultdict(list)
    for result in results or ():
        tag = None
        if isinstance(result, TaggedOutput):
            tag, result = result.tag, result.value
        if isinstance(result, WindowedValue):
            result = result.value
        by_tag[tag].append(result)
    return by_tag


class CoreRun(NamedTuple):
    """What the core made of some input, step by step (see ``run_core``)."""

    read: int
    written: list[RedactedEvent]
    duplicates: list[RedactedEvent]
    dead_letters: list[DeadLetter]  # outcomes of inputs: parse, redact, dedupe
    rows: list[MetricRow]
    left_out: list[DeadLetter]  # not outcomes: events the metrics left out (aggregate)
    audit: list[AuditRecord]

    @property
    def balanced(self) -> bool:
        return self.read == len(self.written) + len(self.duplicates) + len(self.dead_letters)


class _Steps:
    """The core's DoFns, set up once (building the redaction engine costs ~0.1 s)."""

    def __init__(self) -> None:
        redaction = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
        self.parse = _ParseChunkFn(ParseLimits(now=NOW), redaction, replay=False)
        self.redact = _RedactBatchFn(redaction, "builtin:classification.yaml", 64)
        self.split = _SplitByShardFn(4)
        self.dedupe = _DedupeGroupFn(archived_input=False)
        self.precombine = _PreCombineFn(60, load_price_table(DEFAULT_PRICE_TABLE))
        self.merge = _MergePartialsFn()
        self.format = _FormatMetricRowFn("backfill", load_price_table(DEFAULT_PRICE_TABLE))
        for step in (self.parse, self.redact, self.dedupe, self.precombine, self.format):
            step.setup()


_STEPS: _Steps | None = None


def _steps() -> _Steps:
    global _STEPS
    if _STEPS is None:
        _STEPS = _Steps()
    return _STEPS


def run_core(lines: list[bytes]) -> CoreRun:
    """``lines`` (one chunk of a file) through parse, redact, dedupe and aggregate as a backfill
    runs them, each step being the pipeline's own DoFn called as a function."""
    steps = _steps()
    chunk = LineChunk("fuzz.jsonl", tuple(lines), tuple(range(len(lines))))
    parsed = _outputs(steps.parse.process(chunk))
    batches: list[ParsedBatch] = parsed[None]
    redacted = _outputs(r for batch in batches for r in steps.redact.process(batch))
    run = run_downstream(
        [event for batch in redacted[None] for event in batch.events],
        parsed[DEAD_LETTER_TAG] + redacted[DEAD_LETTER_TAG],
    )
    return run._replace(read=len(lines))


def run_downstream(events: list[RedactedEvent], dead_letters: list[DeadLetter] = ()) -> CoreRun:
    """Redacted ``events`` through the batch dedupe (by shard) and the aggregation."""
    steps = _steps()
    dead_letters = list(dead_letters)
    split = _outputs(steps.split.process(EventBatch("fuzz", tuple(events))))
    dead_letters += split[DEAD_LETTER_TAG]
    shards: dict[int, list[EventBatch]] = defaultdict(list)
    for shard, batch in split[None]:
        shards[shard].append(batch)
    written, duplicates, conflicts = [], [], []
    for shard, grouped in shards.items():
        deduped = _outputs(steps.dedupe.process((shard, grouped)))
        written += [event for batch in deduped[None] for event in batch.events]
        duplicates += deduped[DUPLICATE_TAG]
        conflicts += deduped[CONFLICT_TAG]
    rows, left_out = _aggregate(written)
    audit = [audit_event(e, WRITTEN, NOW) for e in written]
    audit += [audit_event(e, DUPLICATE, NOW) for e in duplicates]
    audit += [audit_event(e, DUPLICATE_CONFLICT, NOW) for e in conflicts]
    audit += [audit_dead_letter(d, NOW) for d in dead_letters]
    return CoreRun(
        len(events), written, duplicates + conflicts, dead_letters, rows, left_out, audit
    )


def _aggregate(written: list[RedactedEvent]) -> tuple[list[MetricRow], list[DeadLetter]]:
    steps = _steps()
    steps.precombine.start_bundle()
    results = list(steps.precombine.process(EventBatch("fuzz", tuple(written))))
    results += list(steps.precombine.finish_bundle())
    partials = _outputs(results)
    left_out = partials[DEAD_LETTER_TAG]
    by_key: dict[tuple, list] = defaultdict(list)
    for key, accumulator in partials[None]:
        by_key[key].append(accumulator)
    rows: list[MetricRow] = []
    pane = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
    for (model, region, start_us), accumulators in by_key.items():
        merged = steps.merge.merge_accumulators(accumulators)
        totals = steps.merge.extract_output(merged)
        start = Timestamp(micros=start_us)
        window = IntervalWindow(start, start + 60)
        formatted = _outputs(
            steps.format.process(((model, region, start_us), totals), window, pane)
        )
        rows += formatted[None]
        left_out += formatted[DEAD_LETTER_TAG]
    return rows, left_out


# --- every sink's encoder ------------------------------------------------------------------


def encode_for_every_sink(run: CoreRun) -> Counter:
    """Encodes what ``run`` holds the way each sink does before it writes, and returns the
    records each could not encode, by sink (what the sinks would take out as dead letters):
    Avro (archive and dead letters), DuckDB (Arrow), SQLite, BigQuery (MERGE parameter and
    streaming-insert rows), PostgreSQL and the Pub/Sub topic (JSON)."""
    refused: Counter = Counter()
    events = [avro_record(e) for e in run.written]
    _, rejected = encode_avro_files(
        events, schema_name="redacted_event", id_field="event_id", max_records=1000
    )
    refused["avro_archive"] += len(rejected)
    letters = [storable_dead_letter(d) for d in run.dead_letters + run.left_out]
    schema = parsed_schema("dead_letter")
    for letter in letters:  # the dead-letter writer's storable form always encodes
        fastavro.schemaless_writer(io.BytesIO(), schema, avro_record(letter), strict=True)
        json.loads(record_json(letter))  # the topic's body
        for attribute in (letter.dead_letter_id, letter.reason, letter.step):
            attribute.encode("utf-8")  # the topic's attributes
    if run.rows:
        metric_rows_to_arrow(run.rows)
        _rows_parameter(run.rows).to_api_repr()
    with sqlite3.connect(":memory:") as con:
        con.execute(audit_table_ddl())
        for sql, parameters in _insert_statements([audit_row(r) for r in run.audit]):
            con.execute(sql, parameters)
    for record in run.audit:
        json.dumps(audit_json_row(record), allow_nan=False)
        postgres_row(record)
    refused["postgres"] += len(unencodable_audit_rows(run.audit))
    return refused
