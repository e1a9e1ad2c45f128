"""The fast audit row builder and writer against plain reference implementations.

``audit_event``, ``audit_row`` and ``insert_audit_records`` were rewritten for speed; stored rows
must not change by a byte. The reference row builder below is the previous implementation,
driven by the schema's column kinds as it was, so a schema change that ``audit_row`` misses
fails here too; the reference writer upserts one row per statement, with the precedence rule
spelled out in Python (``OUTCOME_PRECEDENCE``), where the writer batches rows into multi-row
statements in SQL.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import enum
import hashlib
import json
import sqlite3
import time
import zoneinfo
from typing import Any

import pandas as pd
import pytest

from pipelines.io.sinks.embedded import audit as sink
from tests.support.factories import redacted_event
from tests.support.sink_factories import T0, audit_record, dead_letter
from transforms.audit import (
    DEAD_LETTERED,
    DUPLICATE,
    DUPLICATE_CONFLICT,
    OUTCOME_PRECEDENCE,
    WRITTEN,
    audit_dead_letter,
    audit_event,
    audit_replay,
)
from transforms.elements import AuditRecord

# --- the previous implementation -----------------------------------------------------------


def _old_audit_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def old_audit_event(event, outcome: str, recorded_at: dt.datetime) -> AuditRecord:
    return AuditRecord(
        audit_id=_old_audit_id(event.event_id, outcome),
        event_id=event.event_id,
        request_id=event.request_id,
        user_key=event.user_key,
        outcome=outcome,
        reason=None,
        data_class=event.data_class,
        redaction_counts=dict(event.redaction_counts),
        model=event.model,
        region=event.region,
        event_time=event.event_time,
        dead_letter_id=None,
        recorded_at=recorded_at,
    )


def _old_sqlite_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "timestamp":
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == "date":
        return value.isoformat()
    if kind == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _old_field_kinds() -> tuple[str, ...]:
    by_name = {c.name: c.kind for c in sink._columns()}
    return tuple(by_name[name] for name in AuditRecord._fields)


def old_audit_row(record: AuditRecord) -> tuple[Any, ...]:
    return tuple(
        _old_sqlite_value(kind, value)
        for kind, value in zip(_old_field_kinds(), record, strict=True)
    )


# The table as release 1 created it: with a unique key on (event_id, outcome).
FORMER_DDL = """CREATE TABLE IF NOT EXISTS audit_log (
  audit_id TEXT NOT NULL PRIMARY KEY,
  event_id TEXT,
  request_id TEXT,
  user_key TEXT,
  outcome TEXT NOT NULL,
  reason TEXT,
  data_class TEXT,
  redaction_counts TEXT NOT NULL,
  model TEXT,
  region TEXT,
  event_time TEXT,
  dead_letter_id TEXT,
  recorded_at TEXT NOT NULL,
  input_id TEXT,
  UNIQUE (event_id, outcome)
)"""
# The table now: one row per input (audit_id), input_id indexed.
DDL = FORMER_DDL.replace(",\n  UNIQUE (event_id, outcome)", "")
_COLUMNS = (
    "audit_id, event_id, request_id, user_key, outcome, reason, data_class, redaction_counts, "
    "model, region, event_time, dead_letter_id, recorded_at, input_id"
)
REFERENCE_INSERT = f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"


def reference_create(db_path: str, ddl: str = DDL) -> None:
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as con:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("BEGIN IMMEDIATE")
        con.execute(ddl)
        con.execute("COMMIT")


def reference_insert(db_path: str, records) -> int:
    """One statement per row: a new audit_id is inserted; a stored one is replaced, row and
    rowid, only by a record whose outcome ranks higher (the writer's UPDATE keeps the rowid:
    compared without it where that differs)."""
    rows = [old_audit_row(r) for r in records]
    changed = 0
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as con:
        con.execute("BEGIN IMMEDIATE")
        for row in rows:
            stored = con.execute(
                "SELECT outcome FROM audit_log WHERE audit_id = ?", [row[0]]
            ).fetchone()
            if stored is None:
                con.execute(REFERENCE_INSERT, row)
            elif OUTCOME_PRECEDENCE.get(row[4], 0) > OUTCOME_PRECEDENCE.get(stored[0], 0):
                con.execute(
                    f"UPDATE audit_log SET ({_COLUMNS}) = ({', '.join('?' * 14)}) "
                    "WHERE audit_id = ?",
                    [*row, row[0]],
                )
            else:
                continue
            changed += 1
        con.execute("COMMIT")
    return changed


# --- inputs ---------------------------------------------------------------------------------


class _Key(str):
    pass


class _Count(enum.IntEnum):
    ONE = 1


class _Moment(dt.datetime):
    pass


REDACTION_COUNTS = [
    {},
    {"EMAIL_ADDRESS": 1},
    {"PHONE_NUMBER": 2, "EMAIL_ADDRESS": 1, "CREDIT_CARD_NUMBER": 3},  # unsorted
    {"ÉMAIL": 1, "名前": 2, "emoji😀": 3, 'quo"te\\': 4, "ctl\n\t\x00\x7f": 5, "\ud800": 6},
    {"BIG": 10**30, "NEG": -4, "ZERO": 0},
    {"FLAG": True, "OFF": False},
    {"RATIO": 1.5, "NAN": float("nan"), "INF": float("inf")},
    {1: 2, 3: 4},
    {"nested": {"b": 1, "a": [1, 2]}},
    collections.OrderedDict([("Z", 1), ("A", 2)]),
    {_Key("SUBCLASS_KEY"): 1},
    {"ENUM": _Count.ONE},
    {"NONE": None},
]

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
TIMESTAMPS = [
    T0,
    T0.replace(microsecond=1),
    dt.datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=dt.UTC),
    dt.datetime(
        2026, 1, 27, 10, 0, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
    ),
    dt.datetime(2026, 1, 1, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
    dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(0))),  # UTC, not dt.UTC
    dt.datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN),
    dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),
    dt.datetime(2026, 7, 1, 12, 0, 0, 42),  # naive: local time (TZ is set by the fixture)
    dt.datetime(999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),  # %Y is not padded below 1000
    dt.datetime(1000, 1, 1, tzinfo=dt.UTC),
    dt.datetime(1, 1, 1, 5, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    pd.Timestamp("2026-01-27T10:00:05.123456789Z"),
    _Moment(2026, 5, 1, 8, tzinfo=dt.UTC),
]


@pytest.fixture
def local_time_zone(monkeypatch):
    """A local time zone that is not UTC, so naive datetimes are converted."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _events() -> list:
    events = []
    for i, counts in enumerate(REDACTION_COUNTS):
        events.append(redacted_event(event_id=f"evt-{i:04d}", redaction_counts=counts))
    for i, event_time in enumerate(TIMESTAMPS):
        # _replace: the factory's defaults overflow near datetime.max
        events.append(redacted_event(event_id=f"evt-t{i:03d}")._replace(event_time=event_time))
    events.append(
        redacted_event(
            event_id="évt-ünïcode-😀",
            request_id="req-名前",
            user_key="ключ",
            model="modèle",
            region="région\u2028",
            data_class="CONFIDENTIAL",
        )
    )
    return events


def _records() -> list[AuditRecord]:
    """Written, duplicate, dead-lettered and replayed records, with None fields, non-ASCII
    strings, the redaction-count maps and the timestamps above."""
    recorded = [T0 + dt.timedelta(seconds=7, microseconds=i) for i in range(3)]
    records = []
    for i, event in enumerate(_events()):
        for outcome in (WRITTEN, DUPLICATE):
            records.append(audit_event(event, outcome, recorded[i % 3]))
    for i, recorded_at in enumerate(TIMESTAMPS):
        records.append(audit_event(redacted_event(event_id=f"evt-r{i:03d}"), WRITTEN, recorded_at))
    letters = [
        dead_letter(),
        dead_letter(event_id=None, request_id=None, reason="invalid_json", payload="{"),
        dead_letter(reason="ünïcode_reason", payload="payload-é"),
    ]
    for letter in letters:
        records.append(audit_dead_letter(letter, recorded[0]))
        records.append(audit_replay(letter, recorded[1]))
    records += [
        audit_record(event_id=None, request_id=None, user_key=None, event_time=None),
        audit_record(
            event_id="evt-nulls",
            data_class=None,
            model=None,
            region=None,
            reason="why",
            dead_letter_id=None,
        ),
        audit_record(event_id="evt-dl-only", reason=None, dead_letter_id="dl-only"),
        audit_record(event_id="evt-reason-only", reason="only", dead_letter_id=None),
    ]
    return records


# --- rows -----------------------------------------------------------------------------------


def _outcome(function, *args):
    """("ok", value with its types) or ("error", exception type)."""
    try:
        value = function(*args)
    except Exception as error:  # compared, not swallowed: the test asserts on it
        return "error", type(error)
    if isinstance(value, tuple):
        return "ok", value, tuple(type(v) for v in value)
    return "ok", value, type(value)


def test_audit_row_matches_the_previous_builder(local_time_zone):
    records = _records()
    assert len(records) > 80
    for record in records:
        new, old = _outcome(sink.audit_row, record), _outcome(old_audit_row, record)
        assert new == old, record


def test_audit_row_errors_match_the_previous_builder(local_time_zone):
    bad = [
        audit_record(event_time="2026-01-27T10:00:05Z"),  # text, not a datetime
        audit_record(event_time=dt.date(2026, 1, 27)),
        audit_record(
            recorded_at=dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=1)))
        ),
        audit_record(redaction_counts={1: 2, "a": 3}),  # keys json.dumps cannot sort
        audit_record(redaction_counts={"a": object()}),
        audit_record(redaction_counts=None),
        tuple(audit_record())[:12],  # a field short
        (*audit_record(), None),  # a field too many
    ]
    for record in bad:
        new, old = _outcome(sink.audit_row, record), _outcome(old_audit_row, record)
        assert new == old, record
    assert _outcome(sink.audit_row, bad[0])[0] == "error"


def test_json_text_is_json_dumps_for_every_map():
    for counts in REDACTION_COUNTS:
        assert sink._json_text(counts) == json.dumps(counts, sort_keys=True, separators=(",", ":"))
    assert sink._json_text({"\ud800": 1}) == '{"\\ud800":1}'
    assert sink._json_text({"a": 1, "b": 2}) == '{"a":1,"b":2}'


def test_timestamp_text_pads_and_converts(local_time_zone):
    assert sink._timestamp_text(T0) == "2026-01-27T10:00:00.000000Z"
    assert (
        sink._timestamp_text(dt.datetime(2026, 7, 1, 8, 0, 0, 5)) == "2026-07-01T12:00:00.000005Z"
    )
    early = dt.datetime(999, 1, 2, tzinfo=dt.UTC)  # whether %Y pads is the C library's choice
    assert sink._timestamp_text(early) == early.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_audit_event_matches_the_previous_builder(local_time_zone):
    for event in _events():
        for outcome in (WRITTEN, DUPLICATE):
            for recorded_at in (T0, TIMESTAMPS[3], TIMESTAMPS[8]):
                new = audit_event(event, outcome, recorded_at)
                old = old_audit_event(event, outcome, recorded_at)
                assert type(new) is AuditRecord
                assert new == old
                assert [type(v) for v in new] == [type(v) for v in old]
                assert new.redaction_counts is not event.redaction_counts  # a copy, as before
    for letter in (dead_letter(), dead_letter(event_id=None, reason="ünï")):
        assert audit_dead_letter(letter, T0).audit_id == _old_audit_id(
            letter.dead_letter_id, DEAD_LETTERED
        )
        assert audit_replay(letter, T0).audit_id == _old_audit_id(letter.dead_letter_id, "replayed")
    with pytest.raises(TypeError):  # a missing id fails as it did
        audit_event(redacted_event(event_id=None), WRITTEN, T0)
    with pytest.raises(TypeError):
        old_audit_event(redacted_event(event_id=None), WRITTEN, T0)


# --- stored table ---------------------------------------------------------------------------


def _batches() -> list[list[AuditRecord]]:
    """Batches with runs of every length around the statement size, dead letters between
    written rows, duplicates in a batch, records of one input (audit_id) with every outcome,
    in both orders and inside one batch, and rows stored by an earlier batch."""
    base = _records()
    many = [
        audit_record(event_id=f"evt-run-{i:04d}", recorded_at=T0 + dt.timedelta(microseconds=i))
        for i in range(500)
    ]
    letters = [
        audit_dead_letter(
            dead_letter(dead_letter_id=f"dl-{i:03d}", event_id=None, reason="invalid_json"), T0
        )
        for i in range(12)
    ]
    mixed, start = [], 0
    for length, letter in zip((1, 2, 3, 63, 64, 65, 127, 75), letters, strict=False):
        mixed += [*many[start : start + length], letter]
        start += length
    first = many[0]
    conflicts = [
        first._replace(recorded_at=T0 + dt.timedelta(days=1)),  # same audit_id: kept as is
        first._replace(audit_id="b" * 64),  # same (event_id, outcome), other input: stored
        audit_record(event_id="evt-new", audit_id=first.audit_id),  # same input, same outcome
        audit_record(event_id="evt-x", audit_id="c" * 64, outcome=DUPLICATE),
        audit_record(event_id="evt-x", audit_id="d" * 64, outcome=DUPLICATE),  # other inputs
        audit_record(event_id=None, audit_id="e" * 64),
        audit_record(event_id=None, audit_id="f" * 64),
        # One input, lower outcomes first: each replaces the one before it.
        audit_record(event_id="evt-up", audit_id="1" * 64, outcome=DEAD_LETTERED, reason="r"),
        audit_record(event_id="evt-up", audit_id="1" * 64, outcome=DUPLICATE),
        audit_record(event_id="evt-up", audit_id="1" * 64, outcome=DUPLICATE_CONFLICT),
        audit_record(event_id="evt-up", audit_id="1" * 64, outcome=WRITTEN),
        # One input, written first: the later, lower outcomes change nothing.
        audit_record(event_id="evt-down", audit_id="2" * 64, outcome=WRITTEN),
        audit_record(event_id="evt-down", audit_id="2" * 64, outcome=DUPLICATE),
        audit_record(event_id="evt-down", audit_id="2" * 64, outcome=DEAD_LETTERED, reason="r"),
    ]
    later = [  # the stored rows of evt-x and evt-null... met again with a higher outcome
        audit_record(event_id="evt-x", audit_id="c" * 64, outcome=WRITTEN),
        audit_record(event_id="evt-x", audit_id="d" * 64, outcome=DUPLICATE),
    ]
    return [
        base,
        mixed,
        conflicts + many[490:] + [letters[8]],
        base[:5] + mixed[::7],  # all stored already
        letters[9:] + many[start:490] + later,
    ]


def _stored(db_path: str) -> list[tuple]:
    """Every row with its rowid, in rowid order: insertion order is compared as well."""
    with contextlib.closing(sqlite3.connect(db_path)) as con:
        return con.execute("SELECT rowid, * FROM audit_log ORDER BY rowid").fetchall()


def test_inserted_table_matches_the_reference_writer(tmp_path, local_time_zone):
    ref_db, new_db = str(tmp_path / "ref.sqlite"), str(tmp_path / "new.sqlite")
    reference_create(ref_db)
    sink.create_audit_log(new_db)
    batches = _batches()
    counts = []
    for _ in range(2):  # the second round re-inserts everything: nothing changes
        for batch in batches:
            counts.append(
                (sink.insert_audit_records(new_db, batch), reference_insert(ref_db, batch))
            )
    assert [n for n, _ in counts] == [o for _, o in counts]
    assert all(n == 0 for n, _ in counts[len(batches) :])
    assert sum(n for n, _ in counts) > 500
    assert _stored(new_db) == _stored(ref_db)
    pd.testing.assert_frame_equal(sink.read_audit_log(new_db), sink.read_audit_log(ref_db))
    stored = sink.read_audit_log(new_db).set_index("audit_id")
    assert stored.loc["1" * 64, "outcome"] == WRITTEN and stored.loc["1" * 64, "reason"] is None
    assert stored.loc["2" * 64, "outcome"] == WRITTEN
    assert stored.loc["c" * 64, "outcome"] == WRITTEN
    assert stored.loc["d" * 64, "outcome"] == DUPLICATE


def test_a_table_made_by_the_former_code_loses_its_unique_key_and_keeps_its_rows(
    tmp_path, local_time_zone
):
    former_db, new_db = str(tmp_path / "former.sqlite"), str(tmp_path / "new.sqlite")
    batches = _batches()
    reference_create(former_db, FORMER_DDL)
    reference_create(new_db)
    rows = batches[0][:40]  # one per (event_id, outcome): the former key holds them all
    assert reference_insert(former_db, rows) == reference_insert(new_db, rows) == 40
    sink.create_audit_log(former_db)
    sink.create_audit_log(former_db)  # once migrated, nothing more to do
    assert _stored(former_db) == _stored(new_db)
    with contextlib.closing(sqlite3.connect(former_db)) as con:
        (ddl,) = con.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_log'").fetchone()
        indexes = {row[1] for row in con.execute("PRAGMA index_list(audit_log)")}
    assert ddl == DDL.replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE")
    assert sink.audit_table_ddl() == DDL
    assert "audit_log_input_id" in indexes
    # Two duplicates of one event from two inputs: the former key refused the second.
    two = [audit_record(audit_id=f"{i}" * 64, outcome=DUPLICATE) for i in (7, 8)]
    assert sink.insert_audit_records(former_db, two) == 2


def test_a_row_the_table_refuses_fails_the_flush_and_stores_nothing(tmp_path):
    ref_db, new_db = str(tmp_path / "ref.sqlite"), str(tmp_path / "new.sqlite")
    reference_create(ref_db)
    sink.create_audit_log(new_db)
    first = [audit_record(event_id=f"evt-{i}") for i in range(3)]
    sink.insert_audit_records(new_db, first)
    reference_insert(ref_db, first)
    for bad in (
        {"model": ["not", "bindable"]},  # cannot be bound
        {"redaction_counts": None},  # NULL in a NOT NULL column: never skipped silently
        {"recorded_at": None},
    ):
        batch = [audit_record(event_id=f"evt-b{i}") for i in range(100)]
        batch[70] = batch[70]._replace(**bad)
        with pytest.raises((sqlite3.ProgrammingError, sqlite3.IntegrityError)):
            sink.insert_audit_records(new_db, batch)
        with pytest.raises((sqlite3.ProgrammingError, sqlite3.IntegrityError)):
            reference_insert(ref_db, batch)
        assert _stored(new_db) == _stored(ref_db)
        assert len(_stored(new_db)) == 3


def test_statements_stay_under_the_parameter_limit_and_keep_row_order():
    rows = [sink.audit_row(r) for batch in _batches() for r in batch]
    statements = sink._insert_statements(rows)
    assert max(len(parameters) for _, parameters in statements) <= 999
    assert len({sql for sql, _ in statements}) <= 14
    # Read back in order, the statements hold the rows in order (NULL dead-letter columns
    # left out where the statement does not name them).
    rebuilt = []
    for sql, parameters in statements:
        columns = sql[sql.index("(") + 1 : sql.index(")")].split(", ")
        width = len(columns)
        for start in range(0, len(parameters), width):
            values = dict(zip(columns, parameters[start : start + width], strict=True))
            rebuilt.append(tuple(values.get(c.name) for c in sink._columns()))
    assert rebuilt == rows
