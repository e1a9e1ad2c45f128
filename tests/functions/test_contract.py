"""The Avro files are the source of truth: elements and BigQuery schemas follow them."""

import pytest

from schemas.contract import SCHEMA_NAMES, bigquery_schema, load_schema, parsed_schema
from transforms.elements import AuditRecord, DeadLetter, MetricRow, RedactedEvent

ELEMENT_OF = {
    "redacted_event": RedactedEvent,
    "metric_row": MetricRow,
    "audit_record": AuditRecord,
    "dead_letter": DeadLetter,
}


def _walk_fields(schema):
    for field in schema["fields"]:
        yield field
        for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
            if isinstance(branch, dict):
                inner = branch.get("items", branch)
                if isinstance(inner, dict) and inner.get("type") == "record":
                    yield from _walk_fields(inner)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_field_is_documented_and_nullables_default_to_null(name):
    schema = load_schema(name)
    assert schema.get("doc")
    parsed_schema(name)  # fastavro accepts it
    for field in _walk_fields(schema):
        assert field.get("doc"), f"{name}.{field['name']} has no doc"
        if isinstance(field["type"], list) and field["type"][0] == "null":
            assert "default" in field and field["default"] is None, field["name"]


@pytest.mark.parametrize(("name", "element"), sorted(ELEMENT_OF.items()))
def test_elements_have_the_schema_fields_in_order(name, element):
    assert list(element._fields) == [f["name"] for f in load_schema(name)["fields"]]


def test_bigquery_schema_is_derived_from_avro():
    metric = {f["name"]: f for f in bigquery_schema("metric_row")}
    assert metric["window_start"] == {
        "name": "window_start",
        "type": "TIMESTAMP",
        "mode": "REQUIRED",
        "description": "Window start (inclusive), UTC.",
    }
    assert metric["request_count"]["type"] == "INT64"
    assert metric["latency_p99_ms"]["type"] == "FLOAT64"
    assert metric["users_hll"]["type"] == "BYTES"
    assert metric["is_final"]["type"] == "BOOL"
    bins = metric["latency_sketch_bins"]
    assert (bins["type"], bins["mode"]) == ("RECORD", "REPEATED")
    assert [f["name"] for f in bins["fields"]] == ["index", "count"]
    counts = metric["redaction_counts"]
    assert (counts["type"], counts["mode"]) == ("RECORD", "REPEATED")
    assert [(f["name"], f["type"]) for f in counts["fields"]] == [
        ("key", "STRING"),
        ("value", "INT64"),
    ]
    event = {f["name"]: f for f in bigquery_schema("redacted_event")}
    assert event["event_date"]["type"] == "DATE"
    assert event["event_id"]["type"] == "STRING"
    assert event["prompt"]["mode"] == "NULLABLE"
    assert event["policy_flags"]["mode"] == "REPEATED"
    gateway = {f["name"]: f for f in bigquery_schema("gateway_event")}
    assert (gateway["schema_version"]["type"], gateway["schema_version"]["mode"]) == (
        "STRING",
        "NULLABLE",
    )
    for name in SCHEMA_NAMES:
        assert [f["name"] for f in bigquery_schema(name)] == [
            f["name"] for f in load_schema(name)["fields"]
        ]


def test_unknown_schema_name_is_an_error():
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("nope")
