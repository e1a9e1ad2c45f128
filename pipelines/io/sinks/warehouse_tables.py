"""The warehouse tables, defined once for DuckDB and BigQuery from the Avro contract.

Both warehouses hold the same tables with the same columns: the BigQuery schema that
``schemas.contract`` derives from each ``.avsc`` (Avro maps become ``key``/``value`` lists,
since BigQuery has no map type), translated here to DuckDB DDL and to an Arrow schema. A
*record* is one row in that layout: a plain dict, maps as key/value lists sorted by key, nested
records as dicts. DuckDB reads and writes records through Arrow, BigQuery through query
parameters; both sinks build them with ``table_record``.

| Table | Contract | Key | Written |
|---|---|---|---|
| ``metrics_minute`` | ``metric_row`` | ``window_start, model, region`` | newest pane per key |
| ``metrics_rollup`` | ``metric_rollup`` | ``grain, period_start, model, region`` | merged |
| ``freshness_minute`` | ``freshness_row`` | ``window_start, latency_s`` | merged |
| ``usage_hourly`` | ``usage_row`` | ``hour_start, user_key, model, model_version`` | newest pane |
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, NamedTuple

import pyarrow as pa

from schemas.contract import bigquery_schema, load_schema
from transforms.elements import to_record

__all__ = [
    "FRESHNESS",
    "METRICS",
    "ROLLUPS",
    "TABLES",
    "USAGE",
    "Table",
    "arrow_schema",
    "duckdb_ddl",
    "duckdb_type",
    "fields_of",
    "records_to_arrow",
    "table_record",
]


class Table(NamedTuple):
    """A warehouse table: its name, the contract schema of its rows and its key columns."""

    name: str
    schema: str
    key: tuple[str, ...]


METRICS = Table("metrics_minute", "metric_row", ("window_start", "model", "region"))
ROLLUPS = Table("metrics_rollup", "metric_rollup", ("grain", "period_start", "model", "region"))
FRESHNESS = Table("freshness_minute", "freshness_row", ("window_start", "latency_s"))
USAGE = Table("usage_hourly", "usage_row", ("hour_start", "user_key", "model", "model_version"))
TABLES = (METRICS, ROLLUPS, FRESHNESS, USAGE)

_BIGQUERY_TO_DUCKDB = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "BYTES": "BLOB",
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATE": "DATE",
}
_BIGQUERY_TO_ARROW = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "BYTES": pa.binary(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
}


@cache
def fields_of(table: Table) -> tuple[dict[str, Any], ...]:
    """The BigQuery schema fields of ``table`` (derived from its contract)."""
    return tuple(bigquery_schema(table.schema))


@cache
def _map_columns(schema: str) -> frozenset[str]:
    return frozenset(
        f["name"]
        for f in load_schema(schema)["fields"]
        if isinstance(f["type"], dict) and f["type"].get("type") == "map"
    )


def duckdb_type(field: dict[str, Any]) -> str:
    """The DuckDB type of a BigQuery schema field (records as STRUCT, repeated as lists)."""
    if field["type"] == "RECORD":
        members = ", ".join(f'"{f["name"]}" {duckdb_type(f)}' for f in field["fields"])
        base = f"STRUCT({members})"
    else:
        base = _BIGQUERY_TO_DUCKDB[field["type"]]
    return f"{base}[]" if field["mode"] == "REPEATED" else base


def _arrow_type(field: dict[str, Any]) -> pa.DataType:
    if field["type"] == "RECORD":
        base = pa.struct([pa.field(f["name"], _arrow_type(f)) for f in field["fields"]])
    else:
        base = _BIGQUERY_TO_ARROW[field["type"]]
    return pa.list_(base) if field["mode"] == "REPEATED" else base


@cache
def arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(f["name"], _arrow_type(f)) for f in fields_of(table)])


def duckdb_ddl(table: Table) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of ``table`` in DuckDB, with its key as primary key."""
    columns = [
        f'  "{f["name"]}" {duckdb_type(f)}' + (" NOT NULL" if f["mode"] == "REQUIRED" else "")
        for f in fields_of(table)
    ]
    key = ", ".join(f'"{c}"' for c in table.key)
    body = ",\n".join([*columns, f"  PRIMARY KEY ({key})"])
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n{body}\n)"


def table_record(table: Table, row: NamedTuple | dict[str, Any]) -> dict[str, Any]:
    """``row`` (an element of the table's contract, or a dict of it) in the table layout: maps
    as ``key``/``value`` lists sorted by key, nested tuples as dicts."""
    record = to_record(row) if not isinstance(row, dict) else dict(row)
    for column in _map_columns(table.schema):
        value = record[column]
        if isinstance(value, dict):
            record[column] = [{"key": k, "value": v} for k, v in sorted(value.items())]
    return record


def records_to_arrow(table: Table, records: Iterable[dict[str, Any]]) -> pa.Table:
    """Records (``table_record``) as an Arrow table with the table's schema."""
    return pa.Table.from_pylist(list(records), schema=arrow_schema(table))
