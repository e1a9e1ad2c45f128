"""Schema evolution: every revision of the contract kept under schemas/avro/history/ stays
readable by the current schema and reads it (Avro resolution), files written with any earlier
revision read back through the pipeline's own reader, and the checker fails the changes that
would break a reader."""

from __future__ import annotations

import copy
import io
import json
import uuid

import fastavro
import pytest

from pipelines.io.sources.archive import _reader_schema, archived_event
from schemas.compatibility import (
    TABLE_SCHEMA_NAMES,
    compatibility_problems,
    history,
    resolution_problems,
    table_problems,
)
from schemas.contract import SCHEMA_NAMES, load_schema, parsed_schema
from tests.support.avro_samples import sample_record
from transforms.elements import RedactedEvent
from transforms.parse import KNOWN_FIELDS
from transforms.versions import CONTRACT_MAJOR, CONTRACT_VERSION


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_revision_is_compatible_both_ways_and_the_newest_is_current(name):
    assert len(history(name)) >= 1
    assert compatibility_problems(name) == []


def _write(schema: dict, records: list[dict]) -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(copy.deepcopy(schema)), records)
    return buffer.getvalue()


def _plain(value):
    return str(value) if isinstance(value, uuid.UUID) else value


@pytest.mark.parametrize(
    ("name", "revision"),
    [(name, n) for name in SCHEMA_NAMES for n, _ in history(name)],
)
def test_files_of_every_revision_read_with_the_current_schema(name, revision):
    old = dict(history(name))[revision]
    records = [sample_record(old, full=True), sample_record(old, full=False)]
    read = list(
        fastavro.reader(io.BytesIO(_write(old, records)), reader_schema=parsed_schema(name))
    )
    current = {f["name"]: f for f in load_schema(name)["fields"]}
    old_names = {f["name"] for f in old["fields"]}
    for written, got in zip(records, read, strict=True):
        assert set(got) == set(current)
        for field, value in got.items():
            if field in old_names:
                assert _plain(value) == written[field], field
            else:  # added after this revision: its default
                assert value == current[field]["default"], field


@pytest.mark.parametrize("revision", [n for n, _ in history("redacted_event")])
def test_old_archive_records_become_events_as_the_backfill_reads_them(revision):
    old = dict(history("redacted_event"))[revision]
    data = _write(old, [sample_record(old)])
    (record,) = fastavro.reader(io.BytesIO(data), reader_schema=_reader_schema())
    event = archived_event(record)  # what every reader of the archive does
    assert isinstance(event, RedactedEvent)
    assert isinstance(event.policy_flags, tuple) and isinstance(event.unknown_fields, tuple)
    if revision < 3:  # written before contract 1.1: the new fields read as their defaults
        assert (event.tenant_id, event.ttft_ms, event.unknown_fields) == (None, None, ())


def test_the_input_contract_version_is_the_parsers():
    current = load_schema("gateway_event")
    assert current["version"] == CONTRACT_VERSION
    assert CONTRACT_VERSION.split(".")[0] == str(CONTRACT_MAJOR)
    assert current["namespace"] == f"genai.gateway.v{CONTRACT_MAJOR}"
    versions = [schema.get("version", "1.0") for _, schema in history("gateway_event")]
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v.split(".")))), versions
    assert versions[-1] == CONTRACT_VERSION and len(set(versions)) == len(versions)
    assert {f["name"] for f in current["fields"]} == KNOWN_FIELDS


# --- the checker fails what would break a reader -----------------------------------------------


def _changed(name: str, change) -> dict:
    schema = load_schema(name)
    change(schema)
    return schema


def _field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


BREAKING = {
    "new required field": lambda s: s["fields"].append(
        {"name": "tier", "type": "string", "doc": "x"}
    ),
    "string becomes long": lambda s: _field(s, "request_id").update(type="long"),
    "long narrowed to int": lambda s: _field(s, "token_count").update(type="int"),
    "optional becomes required": lambda s: _field(s, "model_version").update(type="string"),
    "logical type changed": lambda s: _field(s, "event_time").update(
        type={"type": "long", "logicalType": "timestamp-millis"}
    ),
    "record renamed": lambda s: s.update(name="Renamed"),
}


@pytest.mark.parametrize("change", sorted(BREAKING))
def test_resolution_catches_breaking_changes(change):
    old = load_schema("redacted_event")
    new = _changed("redacted_event", BREAKING[change])
    assert resolution_problems(old, new) or resolution_problems(new, old), change


def test_removing_a_required_field_breaks_old_readers_only():
    old = load_schema("redacted_event")
    new = _changed("redacted_event", lambda s: s["fields"].remove(_field(s, "policy_version")))
    assert resolution_problems(old, new) == []  # the new reader ignores it
    assert resolution_problems(new, old) == ["policy_version: added without a default"]


def test_additive_optional_changes_pass():
    old = load_schema("redacted_event")
    new = _changed(
        "redacted_event",
        lambda s: s["fields"].append(
            {"name": "tier", "type": ["null", "string"], "default": None, "doc": "x"}
        ),
    )
    assert resolution_problems(old, new) == resolution_problems(new, old) == []
    promoted = _changed("metric_row", lambda s: _field(s, "request_count").update(type="double"))
    assert resolution_problems(load_schema("metric_row"), promoted) == []


def test_tables_take_nullable_or_repeated_columns_only():
    old = load_schema("metric_row")
    required = _changed(
        "metric_row",
        lambda s: s["fields"].append({"name": "tier", "type": "long", "default": 0, "doc": "x"}),
    )
    assert resolution_problems(old, required) == []  # fine for Avro files...
    assert table_problems(old, required) == [  # ...not for a BigQuery table
        "column tier added as REQUIRED (BigQuery adds NULLABLE only)"
    ]
    assert table_problems(old, load_schema("metric_row")) == []
    assert set(TABLE_SCHEMA_NAMES) <= set(SCHEMA_NAMES)


def test_a_changed_contract_must_be_recorded(monkeypatch):
    from schemas import compatibility

    newest = history("dead_letter")[-1][1]
    changed = copy.deepcopy(newest)
    changed["fields"].append({"name": "tier", "type": ["null", "string"], "default": None})
    monkeypatch.setattr(compatibility, "load_schema", lambda name: changed)
    (problem,) = compatibility_problems("dead_letter")
    assert "add it as r" in problem
    # A doc edit needs no revision.
    edited = copy.deepcopy(newest)
    edited["fields"][0]["doc"] = "reworded"
    monkeypatch.setattr(compatibility, "load_schema", lambda name: edited)
    assert compatibility_problems("dead_letter") == []


def test_history_files_are_json_avro_schemas():
    for name in SCHEMA_NAMES:
        for n, schema in history(name):
            fastavro.parse_schema(copy.deepcopy(schema))
            assert json.loads(json.dumps(schema))["type"] == "record", (name, n)
