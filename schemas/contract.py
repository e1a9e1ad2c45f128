"""Loads the Avro contract and derives the other schemas from it.

The ``.avsc`` files in ``schemas/avro/`` are the single source of truth. BigQuery table schemas
(and the JSON files Terraform reads) are derived here, never written by hand, so the archive,
the warehouse and the infrastructure cannot drift apart.

Type mapping to BigQuery: ``["null", T]`` -> NULLABLE T; arrays -> REPEATED; records -> RECORD;
Avro maps (string keys) -> REPEATED RECORD<key STRING, value T>, because BigQuery has no map type;
``timestamp-micros`` -> TIMESTAMP; ``date`` -> DATE; ``uuid`` -> STRING. A union of several
non-null types (the input's ``schema_version``) becomes STRING, its normalised form.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro

__all__ = [
    "SCHEMA_NAMES",
    "bigquery_schema",
    "load_schema",
    "parsed_schema",
]

# File stem -> record it holds. Order is the order of the pipeline.
SCHEMA_NAMES: tuple[str, ...] = (
    "gateway_event",
    "redacted_event",
    "metric_row",
    "metric_rollup",
    "freshness_row",
    "usage_row",
    "audit_record",
    "dead_letter",
)

_PRIMITIVE_TO_BIGQUERY = {
    "string": "STRING",
    "bytes": "BYTES",
    "int": "INT64",
    "long": "INT64",
    "float": "FLOAT64",
    "double": "FLOAT64",
    "boolean": "BOOL",
}
_LOGICAL_TO_BIGQUERY = {
    "timestamp-micros": "TIMESTAMP",
    "timestamp-millis": "TIMESTAMP",
    "date": "DATE",
    "uuid": "STRING",
}


@cache
def _schema_text(name: str) -> str:
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return resources.files("schemas").joinpath("avro", f"{name}.avsc").read_text("utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """Returns the Avro schema ``name`` (a file stem of ``schemas/avro``) as a fresh dict."""
    return json.loads(_schema_text(name))


@cache
def parsed_schema(name: str) -> dict[str, Any]:
    """Returns the schema parsed by fastavro, ready for ``fastavro.writer``/validation."""
    return fastavro.parse_schema(load_schema(name))


def _bigquery_type(avro_type: Any) -> tuple[str, str, list[dict[str, Any]] | None]:
    """Maps an Avro type to (BigQuery type, mode, sub-fields)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        mode = "NULLABLE" if "null" in avro_type else "REQUIRED"
        if len(branches) > 1:
            return "STRING", mode, None
        bq_type, _, fields = _bigquery_type(branches[0])
        return bq_type, mode, fields
    if isinstance(avro_type, str):
        return _PRIMITIVE_TO_BIGQUERY[avro_type], "REQUIRED", None
    logical = avro_type.get("logicalType")
    if logical in _LOGICAL_TO_BIGQUERY:
        return _LOGICAL_TO_BIGQUERY[logical], "REQUIRED", None
    kind = avro_type["type"]
    if kind == "record":
        return "RECORD", "REQUIRED", [_bigquery_field(f) for f in avro_type["fields"]]
    if kind == "array":
        bq_type, _, fields = _bigquery_type(avro_type["items"])
        return bq_type, "REPEATED", fields
    if kind == "map":
        value_type, _, value_fields = _bigquery_type(avro_type["values"])
        value: dict[str, Any] = {"name": "value", "type": value_type, "mode": "REQUIRED"}
        if value_fields is not None:
            value["fields"] = value_fields
        key = {"name": "key", "type": "STRING", "mode": "REQUIRED"}
        return "RECORD", "REPEATED", [key, value]
    return _bigquery_type(kind)


def _bigquery_field(field: dict[str, Any]) -> dict[str, Any]:
    bq_type, mode, sub_fields = _bigquery_type(field["type"])
    out: dict[str, Any] = {
        "name": field["name"],
        "type": bq_type,
        "mode": mode,
        "description": field.get("doc", ""),
    }
    if sub_fields is not None:
        out["fields"] = sub_fields
    return out


def bigquery_schema(name: str) -> list[dict[str, Any]]:
    """Returns the BigQuery JSON schema (the ``bq``/Terraform format) derived from ``name``."""
    return [_bigquery_field(f) for f in load_schema(name)["fields"]]
