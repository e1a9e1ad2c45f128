"""Embedded metrics warehouse: ``UpsertMetrics`` writes ``MetricRow`` panes to DuckDB.

Table ``metrics_minute`` holds exactly one row per ``(window_start, model, region)``. Its columns
and types are derived from the BigQuery schema of ``metric_row.avsc`` (so maps are
``STRUCT(key, value)[]``, exactly like the BigQuery table), never written by hand.

Upsert rule: a row replaces the stored row of its key only if it is newer: it comes from a
stronger ``source`` (``backfill`` over ``streaming``; a null source, from before the column
existed, counts as ``streaming``), or from the same source with a larger ``pane_index``, or an
equal ``pane_index``, a later ``emitted_at`` and different content. Panes accumulate, so the
newest pane carries the whole window. A backfill (reconciliation) recomputes a window from all of
its events, so its row replaces the streaming one, and a streaming pane arriving afterwards for
that window (a late pane, a restarted job) cannot roll it back; re-running the backfill changes
nothing unless the content changed (a new price table: the cost is recomputed). Replaying the
same input changes nothing, and panes that arrive out of order (a retried bundle) cannot roll a
row back. Caveat: ``pane_index`` restarts at 0 in a new job, so after a restart (not an in-place
update) a window that already has pane 3 keeps it until the new job's panes overtake it.

Migration: ``create_warehouse`` adds the columns of the contract that an existing table lacks
(``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``), so a ``warehouse.duckdb`` created before a field
was added keeps working; rows already there hold NULL in the new columns. Only nullable fields can
be added this way (the contract adds fields as nullable for that reason, as BigQuery requires);
a new required field is an error that names the column.

Views: the definitions of ``pipelines.views`` (one SQL file per view, BigQuery dialect,
translated to DuckDB), created with the table, so both warehouses run the same definitions.

Concurrency: DuckDB lets one process at a time open the file for writing. Rows are buffered per
bundle and written in one transaction per flush with a short-lived connection, so several worker
processes take turns; lock and write conflicts are retried with exponential backoff, and when the
retries are exhausted the bundle fails and the runner retries it (the upsert makes that safe).
The database is a local file: this sink is for the local stack and single-machine runs, not
Dataflow (which writes to BigQuery).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa

from pipelines.io.sinks.embedded.tables import EmbeddedTable, WriteTable
from pipelines.io.sinks.retry import retry_conflicts
from pipelines.views import VIEW_NAMES, duckdb_view_sql
from schemas.contract import bigquery_schema, load_schema
from transforms.aggregate import BACKFILL
from transforms.deadletter import is_element_error
from transforms.elements import MetricRow, to_record

__all__ = [
    "KEY_COLUMNS",
    "METRICS_TABLE",
    "NOT_CONTENT",
    "UpsertMetrics",
    "create_warehouse",
    "delete_metrics_before",
    "latest_panes",
    "metric_rows_to_arrow",
    "metrics_table_ddl",
    "read_metrics",
    "source_rank_sql",
    "unencodable_metric_rows",
    "upsert_metric_rows",
    "warehouse_record",
]

_LOGGER = logging.getLogger(__name__)

METRICS_TABLE = "metrics_minute"
KEY_COLUMNS = ("window_start", "model", "region")

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

DEFAULT_MAX_BUFFERED_ROWS = 500
# Streaming: rows are gathered this long (processing time) and upserted together. Opening the
# file, upserting and closing it costs ~50 ms here whatever the number of rows, and the
# DirectRunner's streaming bundles are small: upserting per bundle took ~10% of a 1k events/s
# run. It adds at most this much to the time before a pane is queryable.
DEFAULT_FLUSH_S = 5
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_FIRST_BACKOFF_S = 0.05


# --- schema and DDL ------------------------------------------------------------------------


def _duckdb_type(field: dict[str, Any]) -> str:
    if field["type"] == "RECORD":
        members = ", ".join(f'"{f["name"]}" {_duckdb_type(f)}' for f in field["fields"])
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
def _metric_fields() -> tuple[dict[str, Any], ...]:
    return tuple(bigquery_schema("metric_row"))


@cache
def _map_columns() -> frozenset[str]:
    # BigQuery (and so this table) has no map type: Avro maps become key/value lists.
    return frozenset(
        f["name"]
        for f in load_schema("metric_row")["fields"]
        if isinstance(f["type"], dict) and f["type"].get("type") == "map"
    )


@cache
def _arrow_schema() -> pa.Schema:
    return pa.schema([pa.field(f["name"], _arrow_type(f)) for f in _metric_fields()])


def metrics_table_ddl() -> str:
    """Returns the DuckDB ``CREATE TABLE IF NOT EXISTS`` of ``metrics_minute``."""
    columns = [
        f'  "{f["name"]}" {_duckdb_type(f)}' + (" NOT NULL" if f["mode"] != "NULLABLE" else "")
        for f in _metric_fields()
    ]
    key = ", ".join(f'"{c}"' for c in KEY_COLUMNS)
    body = ",\n".join([*columns, f"  PRIMARY KEY ({key})"])
    return f"CREATE TABLE IF NOT EXISTS {METRICS_TABLE} (\n{body}\n)"


def source_rank_sql(relation: str) -> str:
    # The SQL twin of _source_rank_of: backfill rows outrank streaming (and null) ones.
    return f"(CASE WHEN {relation}.source = '{BACKFILL}' THEN 1 ELSE 0 END)"


@cache
def _upsert_sql() -> str:
    names = [f["name"] for f in _metric_fields()]
    columns = ", ".join(f'"{n}"' for n in names)
    updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in KEY_COLUMNS)
    key = ", ".join(f'"{c}"' for c in KEY_COLUMNS)
    # A pane with the same index and the same values is a replay (a retried bundle, a re-run
    # backfill): leave the row alone, emitted_at included, so replays change nothing. The
    # HLL bytes and estimate are left out of "same values": merge order changes their bytes.
    content = [n for n in names if n not in KEY_COLUMNS and n not in NOT_CONTENT]
    differs = " OR ".join(f'excluded."{n}" IS DISTINCT FROM {METRICS_TABLE}."{n}"' for n in content)
    new_rank, old_rank = source_rank_sql("excluded"), source_rank_sql(METRICS_TABLE)
    return (
        f"INSERT INTO {METRICS_TABLE} ({columns}) SELECT {columns} FROM incoming "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates} "
        f"WHERE {new_rank} > {old_rank} "
        f"OR ({new_rank} = {old_rank} AND (excluded.pane_index > {METRICS_TABLE}.pane_index "
        f"OR (excluded.pane_index = {METRICS_TABLE}.pane_index "
        f"AND excluded.emitted_at > {METRICS_TABLE}.emitted_at AND ({differs}))))"
    )


# Columns that describe the pane or vary between identical recomputations, not the metrics.
NOT_CONTENT = frozenset(
    {"pane_index", "pane_timing", "is_final", "emitted_at", "users_hll", "distinct_users_approx"}
)


# --- rows ----------------------------------------------------------------------------------


def _source_rank_of(row: MetricRow) -> int:
    return 1 if row.source == BACKFILL else 0


def _is_newer(row: MetricRow, than: MetricRow) -> bool:
    return (_source_rank_of(row), row.pane_index, row.emitted_at) > (
        _source_rank_of(than),
        than.pane_index,
        than.emitted_at,
    )


def _key(row: MetricRow) -> tuple[dt.datetime, str, str]:
    return row.window_start, row.model, row.region


def latest_panes(rows: Iterable[MetricRow]) -> list[MetricRow]:
    """Returns the newest row per key (the table's upsert rule), in first-seen key order.

    An upsert statement may touch a key only once, so a batch is reduced with this first.
    """
    newest: dict[tuple[dt.datetime, str, str], MetricRow] = {}
    for row in rows:
        current = newest.get(_key(row))
        if current is None or _is_newer(row, current):
            newest[_key(row)] = row
    return list(newest.values())


def warehouse_record(row: MetricRow) -> dict[str, Any]:
    """``row`` as a dict in the warehouse layout (maps as key/value lists sorted by key)."""
    record = to_record(row)
    for column in _map_columns():
        record[column] = [{"key": k, "value": v} for k, v in sorted(record[column].items())]
    return record


def metric_rows_to_arrow(rows: Iterable[MetricRow]) -> pa.Table:
    """Returns ``rows`` as an Arrow table with the warehouse schema (maps as key/value lists)."""
    return pa.Table.from_pylist([warehouse_record(r) for r in rows], schema=_arrow_schema())


# --- DuckDB access with retries ------------------------------------------------------------

_T = TypeVar("_T")


def _is_conflict(error: duckdb.Error) -> bool:
    # Another process holds the file lock, or another connection in this process wrote the same
    # rows or catalog entries first. Anything else is a real error and is raised at once.
    if isinstance(error, duckdb.TransactionException):
        return True
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def _with_connection(
    db_path: str,
    work: Callable[[duckdb.DuckDBPyConnection], _T],
    *,
    max_attempts: int,
    first_backoff_s: float,
    on_retry: Callable[[], None] = lambda: None,
) -> _T:
    """Runs ``work`` in one transaction on a fresh connection, retrying lock conflicts.

    Backoff doubles from ``first_backoff_s`` up to 2 s, with jitter so that competing processes
    do not retry in step. The connection is closed after each attempt, which releases the file
    lock for the other processes.
    """

    def attempt() -> _T:
        # Closing the connection rolls back a transaction that did not commit.
        with duckdb.connect(db_path) as con:
            con.begin()
            result = work(con)
            con.commit()
            return result

    return retry_conflicts(
        attempt,
        is_conflict=lambda e: isinstance(e, duckdb.Error) and _is_conflict(e),
        max_attempts=max_attempts,
        first_backoff_s=first_backoff_s,
        on_retry=on_retry,
    )


def _add_missing_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Adds the contract's columns that an existing ``metrics_minute`` lacks; returns them."""
    existing = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [METRICS_TABLE],
        ).fetchall()
    }
    added = []
    for field in _metric_fields():
        if field["name"] in existing:
            continue
        if field["mode"] != "NULLABLE":
            raise ValueError(
                f"{METRICS_TABLE} lacks the required column {field['name']!r}: a required column "
                "cannot be added to a table that has rows; migrate it by hand"
            )
        con.execute(
            f'ALTER TABLE {METRICS_TABLE} ADD COLUMN IF NOT EXISTS "{field["name"]}" '
            f"{_duckdb_type(field)}"
        )
        added.append(field["name"])
    return added


def create_warehouse(
    db_path: str,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
) -> None:
    """Creates ``metrics_minute`` if missing, adds the contract's new nullable columns to an
    existing one, and (re)creates the views. Idempotent."""
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)

    def create(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(metrics_table_ddl())
        added = _add_missing_columns(con)
        if added:
            _LOGGER.info("%s: added columns %s", db_path, ", ".join(added))
        for name in VIEW_NAMES:
            con.execute(duckdb_view_sql(name))

    _with_connection(db_path, create, max_attempts=max_attempts, first_backoff_s=first_backoff_s)


def upsert_metric_rows(
    db_path: str,
    rows: Iterable[MetricRow],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
    on_retry: Callable[[], None] = lambda: None,
) -> int:
    """Upserts ``rows`` into ``metrics_minute`` in one transaction; returns the rows offered.

    The table must exist (``create_warehouse``). Rows are first reduced to the newest per key.
    """
    incoming = metric_rows_to_arrow(latest_panes(rows))
    if incoming.num_rows == 0:
        return 0

    def upsert(con: duckdb.DuckDBPyConnection) -> None:
        con.register("incoming", incoming)
        con.execute(_upsert_sql())
        con.unregister("incoming")

    _with_connection(
        db_path,
        upsert,
        max_attempts=max_attempts,
        first_backoff_s=first_backoff_s,
        on_retry=on_retry,
    )
    return incoming.num_rows


def unencodable_metric_rows(rows: Sequence[MetricRow]) -> dict[int, Exception]:
    """The rows ``metrics_minute`` cannot hold, by position, with the error each raises when
    converted to Arrow and upserted alone into an in-memory copy of the table (the same
    conversion and statement as a flush: an integer beyond int64, a text UTF-8 cannot encode,
    a NULL in a required column)."""
    bad: dict[int, Exception] = {}
    with duckdb.connect(":memory:") as con:
        con.execute(metrics_table_ddl())
        for position, row in enumerate(rows):
            try:
                con.register("incoming", metric_rows_to_arrow([row]))
                con.execute(_upsert_sql())
            except Exception as error:
                if not is_element_error(error):
                    raise
                bad[position] = error
            finally:
                con.unregister("incoming")
    return bad


def delete_metrics_before(db_path: str, cutoff: dt.datetime, *, dry_run: bool = False) -> int:
    """Deletes the ``metrics_minute`` rows whose window starts before ``cutoff`` (retention).

    Returns the number of rows deleted, or with ``dry_run`` the number that would be (nothing is
    changed). A database file that does not exist holds no rows.
    """
    if not os.path.exists(db_path):
        return 0

    def delete(con: duckdb.DuckDBPyConnection) -> int:
        (count,) = con.execute(
            f"SELECT count(*) FROM {METRICS_TABLE} WHERE window_start < ?", [cutoff]
        ).fetchone()
        if count and not dry_run:
            con.execute(f"DELETE FROM {METRICS_TABLE} WHERE window_start < ?", [cutoff])
        return count

    return _with_connection(
        db_path, delete, max_attempts=DEFAULT_MAX_ATTEMPTS, first_backoff_s=DEFAULT_FIRST_BACKOFF_S
    )


def read_metrics(db_path: str, relation: str = METRICS_TABLE) -> pd.DataFrame:
    """Returns the table or one of the views as a DataFrame (timestamps in UTC), for summaries.

    Raises:
        ValueError: ``relation`` is neither the table nor a view.
    """
    if relation != METRICS_TABLE and relation not in VIEW_NAMES:
        raise ValueError(f"unknown relation {relation!r}")

    def read(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(f"SELECT * FROM {relation}").df()

    return _with_connection(
        db_path, read, max_attempts=DEFAULT_MAX_ATTEMPTS, first_backoff_s=DEFAULT_FIRST_BACKOFF_S
    )


# --- Beam adapter --------------------------------------------------------------------------


class MetricsTable(EmbeddedTable):
    """``metrics_minute`` in a DuckDB file, for ``WriteTable``: the buffer keeps the newest pane
    per key, and the upsert keeps the newest of it and the stored row."""

    name = "metrics_minute"
    step = "write_metrics_duckdb"

    def __init__(
        self,
        db_path: str,
        *,
        flush_s: int = DEFAULT_FLUSH_S,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
    ):
        super().__init__(db_path, max_buffered_rows=max_buffered_rows, flush_s=flush_s)
        if max_attempts < 1 or first_backoff_s < 0:
            raise ValueError("need max_attempts >= 1 and first_backoff_s >= 0")
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s

    def create(self) -> None:
        create_warehouse(
            self.db_path, max_attempts=self._max_attempts, first_backoff_s=self._first_backoff_s
        )

    def new_buffer(self) -> dict[tuple[dt.datetime, str, str], MetricRow]:
        return {}

    def add(self, buffer: dict, row: MetricRow) -> None:
        current = buffer.get(_key(row))
        if current is None or _is_newer(row, current):
            buffer[_key(row)] = row

    def rows(self, buffer: dict) -> Iterable[MetricRow]:
        return buffer.values()

    def unencodable(self, rows: list[MetricRow]) -> dict[int, Exception]:
        return unencodable_metric_rows(rows)

    def write(self, rows: list[MetricRow], on_retry: Callable[[], None]) -> int:
        return upsert_metric_rows(
            self.db_path,
            rows,
            max_attempts=self._max_attempts,
            first_backoff_s=self._first_backoff_s,
            on_retry=on_retry,
        )


class UpsertMetrics(WriteTable):
    """Upserts ``MetricRow`` panes into the DuckDB table ``metrics_minute`` (plus its views).

    Input: PCollection[MetricRow], bounded or unbounded, any windowing. Output: an empty
    PCollection. Guarantee: after every bundle has committed, the table holds one row per
    ``(window_start, model, region)``: the newest pane seen (see the module docstring). A failed
    write fails the bundle; its retry re-upserts the same rows, which changes nothing already
    there. Keyword arguments: those of ``MetricsTable``.
    """

    def __init__(self, db_path: str, **kwargs):
        super().__init__(MetricsTable(db_path, **kwargs))
