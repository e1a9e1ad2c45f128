"""Writes the BigQuery table schemas that Terraform reads, derived from the Avro contract.

Terraform creates the warehouse tables from JSON schema files (``terraform/schemas/<table>.json``,
read with ``file()``). They are generated here from ``schemas/avro/`` by ``bigquery_schema`` and
never edited by hand; a test fails while a file differs from what the contract derives today.

    python -m schemas.bigquery_files terraform/schemas
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.contract import bigquery_schema

__all__ = ["TABLE_SCHEMAS", "render_table_schema", "write_table_schemas"]

# BigQuery table -> the Avro schema (file stem of schemas/avro) its rows follow. The table names
# are the sinks' (the table names of pipelines.io.sinks.embedded.warehouse, AUDIT_TABLE of
# pipelines.io.sinks.embedded.audit); a test checks that they agree.
TABLE_SCHEMAS: dict[str, str] = {
    "metrics_minute": "metric_row",
    "metrics_rollup": "metric_rollup",
    "freshness_minute": "freshness_row",
    "usage_hourly": "usage_row",
    "audit_log": "audit_record",
}


def render_table_schema(table: str) -> str:
    """Returns the JSON schema file content of ``table`` (2-space indent, trailing newline)."""
    if table not in TABLE_SCHEMAS:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLE_SCHEMAS)}")
    return json.dumps(bigquery_schema(TABLE_SCHEMAS[table]), indent=2, ensure_ascii=False) + "\n"


def write_table_schemas(out_dir: str | Path) -> list[Path]:
    """Writes ``<table>.json`` for every table into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in TABLE_SCHEMAS:
        path = out / f"{table}.json"
        path.write_text(render_table_schema(table), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="Directory of the schema files, e.g. terraform/schemas.")
    args = parser.parse_args(argv)
    for path in write_table_schemas(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
