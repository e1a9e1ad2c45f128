"""Embedded metrics warehouse (DuckDB): ``UpsertMetrics`` and ``UpsertUsage``.

Tables (``pipelines.io.sinks.warehouse_tables``; columns derived from the Avro contract, never
written by hand, so maps are ``STRUCT(key, value)[]`` exactly like BigQuery's):

* ``metrics_minute``: one row per ``(window_start, model, region)``, the newest pane;
* ``metrics_rollup``: hourly and daily rollups per ``(model, region)``, incremented by every
  commit in its transaction (ADR 0011), kept after the minute rows expire;
* ``freshness_minute``: events per metric window and freshness bucket, likewise;
* ``usage_hourly``: one row per ``(hour_start, user_key, model, model_version)``, the newest pane.

A metrics flush is one transaction (``commit_metrics``): which pane each key keeps (a backfill
row outranks streaming, then the later emission wins: ADR 0007), the freshness of the events it
makes visible, measured at this commit (ADR 0010), and the rollups and per-minute freshness of
the periods it touches. Usage rows follow the same pane rule. Replaying the same input changes
nothing; panes that arrive out of order (a retried bundle) cannot roll a row back.

Migration: ``create_warehouse`` adds the columns of the contract that an existing table lacks
(``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``), so a ``warehouse.duckdb`` created before a field
was added keeps working; rows already there hold NULL (an empty list, for list columns) in the
new columns. Only nullable or repeated fields can be added this way (the contract adds fields
so, as BigQuery requires); a new required field is an error that names the column. A rollup of
minute rows written before they carried freshness or ingestion times has no freshness for them.

Views: the definitions of ``pipelines.views`` (one SQL file per view, BigQuery dialect,
translated to DuckDB), created with the tables, so both warehouses run the same definitions.

Concurrency: DuckDB lets one process at a time open the file for writing. Rows are buffered per
bundle and written in one transaction per flush with a short-lived connection, so several worker
processes take turns; lock and write conflicts are retried with exponential backoff, and when the
retries are exhausted the bundle fails and the runner retries it (the upsert makes that safe).
The database is a local file: this sink is for the local stack and single-machine runs, not
Dataflow (which writes to BigQuery).

Length (over 600 lines): the DDL, the commit transaction and the readers of one DuckDB file
stay together, so a transaction's statements are read beside the tables they touch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa

from pipelines.io.sinks.embedded.tables import EmbeddedTable, WriteTable
from pipelines.io.sinks.metrics_commit import (
    USAGE_NOT_CONTENT,
    CommitResult,
    increment_freshness,
    increment_rollups,
    latest_records,
    pane_order,
    plan_panes,
    recompute_rollups,
    record_freshness,
    replaces,
    rollup_keys,
    touched_hours,
)
from pipelines.io.sinks.retry import retry_conflicts
from pipelines.io.sinks.warehouse_tables import (
    FRESHNESS,
    METRICS,
    ROLLUPS,
    TABLES,
    USAGE,
    Table,
    arrow_schema,
    duckdb_ddl,
    duckdb_type,
    fields_of,
    records_to_arrow,
    table_record,
)
from pipelines.views import VIEW_NAMES, duckdb_view_sql
from transforms.deadletter import is_element_error
from transforms.elements import MetricRow, UsageRow

__all__ = [
    "KEY_COLUMNS",
    "METRICS_TABLE",
    "UpsertMetrics",
    "UpsertUsage",
    "commit_metric_rows",
    "create_warehouse",
    "delete_before",
    "latest_panes",
    "metric_rows_to_arrow",
    "metrics_table_ddl",
    "read_metrics",
    "refresh_rollups_of_days",
    "unencodable_metric_rows",
    "unencodable_rows",
    "upsert_metric_rows",
    "upsert_usage_rows",
]

_LOGGER = logging.getLogger(__name__)

METRICS_TABLE = METRICS.name
KEY_COLUMNS = METRICS.key

DEFAULT_MAX_BUFFERED_ROWS = 500
# Streaming: rows are gathered this long (processing time) and upserted together. Opening the
# file, upserting and closing it costs ~50 ms here whatever the number of rows, and the
# DirectRunner's streaming bundles are small: upserting per bundle took ~10% of a 1k events/s
# run. It adds at most this much to the time before a pane is queryable (and the freshness
# measured, ADR 0010, includes it).
DEFAULT_FLUSH_S = 5
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_FIRST_BACKOFF_S = 0.05


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def metrics_table_ddl() -> str:
    """Returns the DuckDB ``CREATE TABLE IF NOT EXISTS`` of ``metrics_minute``."""
    return duckdb_ddl(METRICS)


def _key(row: MetricRow) -> tuple[dt.datetime, str, str]:
    return row.window_start, row.model, row.region


def latest_panes(rows: Iterable[MetricRow]) -> list[MetricRow]:
    """Returns the newest row per key (the tables' pane order), in first-seen key order."""
    newest: dict[tuple[dt.datetime, str, str], MetricRow] = {}
    for row in rows:
        current = newest.get(_key(row))
        if current is None or pane_order(row._asdict()) > pane_order(current._asdict()):
            newest[_key(row)] = row
    return list(newest.values())


def metric_rows_to_arrow(rows: Iterable[MetricRow]) -> pa.Table:
    """Returns ``rows`` as an Arrow table with the warehouse schema (maps as key/value lists)."""
    return records_to_arrow(METRICS, (table_record(METRICS, r) for r in rows))


# --- reading and writing records ----------------------------------------------------------


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    """The result of ``sql`` as records (lists and structs as Python lists and dicts)."""
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def stored_records(
    con: duckdb.DuckDBPyConnection, table: Table, keys: Iterable[tuple]
) -> dict[tuple, dict[str, Any]]:
    """The stored records of ``table`` with the given key tuples (``table.key`` order), by key."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    schema = pa.schema([arrow_schema(table).field(c) for c in table.key])
    records = [dict(zip(table.key, k, strict=True)) for k in keys]
    con.register("_keys", pa.Table.from_pylist(records, schema))
    try:
        joined = " AND ".join(f't."{c}" = k."{c}"' for c in table.key)
        rows = _rows(con, f"SELECT t.* FROM {table.name} AS t JOIN _keys AS k ON {joined}")
    finally:
        _unregister(con, "_keys")
    return {tuple(r[c] for c in table.key): r for r in rows}


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    # After a failed statement DuckDB refuses everything but a rollback ("Current transaction
    # is aborted"): that must not hide the statement's own error. The connection is closed
    # after a failed attempt anyway.
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)


def upsert_records(
    con: duckdb.DuckDBPyConnection, table: Table, records: list[dict[str, Any]]
) -> int:
    """Inserts ``records`` (one per key), replacing the stored row of each key; returns them."""
    if not records:
        return 0
    names = [f.name for f in arrow_schema(table)]
    columns = ", ".join(f'"{n}"' for n in names)
    updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in table.key)
    key = ", ".join(f'"{c}"' for c in table.key)
    con.register("_incoming", records_to_arrow(table, records))
    try:
        con.execute(
            f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM _incoming "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
    finally:
        _unregister(con, "_incoming")
    return len(records)


def commit_metrics(
    con: duckdb.DuckDBPyConnection, rows: Iterable[MetricRow], committed_at: dt.datetime
) -> CommitResult:
    """Commits metric panes on ``con`` (the caller owns the transaction): the pane rule and the
    freshness of what becomes visible (``plan_panes``), then the rollups and per-minute
    freshness incremented by what the winners change, all in the one transaction."""
    incoming = latest_records(METRICS, (table_record(METRICS, r) for r in rows))
    stored = stored_records(con, METRICS, (tuple(r[c] for c in METRICS.key) for r in incoming))
    plan = plan_panes(incoming, stored, committed_at)
    upsert_records(con, METRICS, plan.winners)
    stored_rollups = stored_records(con, ROLLUPS, rollup_keys(plan))
    replaced = [old for old in plan.replaced if old is not None]
    if any(("hour", *hour) not in stored_rollups for hour in touched_hours(replaced)):
        # A replaced row without a rollup (a warehouse from before the rollups): there is no
        # base to increment, so the rollups of the batch's hours are recomputed from the rows.
        rollups = _recompute_hours(con, touched_hours(plan.winners), committed_at)
    else:
        rollups = increment_rollups(plan, stored_rollups, committed_at)
        upsert_records(con, ROLLUPS, rollups)
    windows = sorted({r["window_start"] for r in plan.winners})
    stored_freshness = (
        _rows(
            con,
            f"SELECT * FROM {FRESHNESS.name} WHERE window_start IN "
            f"({', '.join('?' for _ in windows)})",
            windows,
        )
        if windows
        else []
    )
    freshness = increment_freshness(plan, stored_freshness, committed_at)
    upsert_records(con, FRESHNESS, freshness)
    return CommitResult(plan.winners, rollups, freshness, plan.visible)


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
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
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
            con.execute("SET TimeZone = 'UTC'")
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


def _add_missing_columns(con: duckdb.DuckDBPyConnection, table: Table) -> list[str]:
    """Adds the contract's columns that an existing table lacks; returns them."""
    existing = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [table.name],
        ).fetchall()
    }
    added = []
    for field in fields_of(table):
        if field["name"] in existing:
            continue
        if field["mode"] == "REQUIRED":
            raise ValueError(
                f"{table.name} lacks the required column {field['name']!r}: a required column "
                "cannot be added to a table that has rows; migrate it by hand"
            )
        con.execute(
            f'ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS "{field["name"]}" '
            f"{duckdb_type(field)}"
        )
        added.append(field["name"])
    return added


def create_tables(con: duckdb.DuckDBPyConnection, tables: Iterable[Table] = TABLES) -> None:
    """Creates the warehouse tables on ``con`` if missing and adds missing columns."""
    for table in tables:
        con.execute(duckdb_ddl(table))
        added = _add_missing_columns(con, table)
        if added:
            _LOGGER.info("%s: added columns %s", table.name, ", ".join(added))


def create_warehouse(
    db_path: str,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
) -> None:
    """Creates the tables if missing, adds the contract's new columns to existing ones, and
    (re)creates the views. Idempotent."""
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)

    def create(con: duckdb.DuckDBPyConnection) -> None:
        create_tables(con)
        for name in VIEW_NAMES:
            con.execute(duckdb_view_sql(name))
        first, last, rollups = con.execute(
            f"SELECT min(window_start), max(window_start), "
            f"(SELECT count(*) FROM {ROLLUPS.name}) FROM {METRICS.name}"
        ).fetchone()
        if first is not None and not rollups:
            # A warehouse from before the rollups: roll up the minute rows it holds, once.
            written = refresh_rollups_of_days(
                con, first, last + dt.timedelta(seconds=1), _utc_now()
            )
            _LOGGER.info("%s: rolled up the minute rows into %d rollups", db_path, len(written))

    _with_connection(db_path, create, max_attempts=max_attempts, first_backoff_s=first_backoff_s)


def commit_metric_rows(
    db_path: str,
    rows: Iterable[MetricRow],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
    on_retry: Callable[[], None] = lambda: None,
    clock: Callable[[], dt.datetime] = _utc_now,
) -> CommitResult:
    """Commits metric panes in one transaction (``commit_metrics``); the tables must exist
    (``create_warehouse``). ``clock`` gives the commit time freshness is measured to, read
    inside the transaction just before it commits (each attempt reads it anew)."""
    rows = list(rows)
    return _with_connection(
        db_path,
        lambda con: commit_metrics(con, rows, clock()),
        max_attempts=max_attempts,
        first_backoff_s=first_backoff_s,
        on_retry=on_retry,
    )


def upsert_metric_rows(db_path: str, rows: Iterable[MetricRow], **kwargs) -> int:
    """Commits metric panes (``commit_metric_rows``); returns the keys offered."""
    rows = list(rows)
    commit_metric_rows(db_path, rows, **kwargs)
    return len({_key(r) for r in rows})


def upsert_usage_rows(
    db_path: str,
    rows: Iterable[UsageRow],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
    on_retry: Callable[[], None] = lambda: None,
) -> int:
    """Upserts usage panes in one transaction, each replacing the stored row of its key only
    under the pane rule; returns the rows that did."""
    incoming = latest_records(USAGE, (table_record(USAGE, r) for r in rows))
    if not incoming:
        return 0

    def upsert(con: duckdb.DuckDBPyConnection) -> int:
        stored = stored_records(con, USAGE, (tuple(r[c] for c in USAGE.key) for r in incoming))
        winners = [
            r
            for r in incoming
            if replaces(r, stored.get(tuple(r[c] for c in USAGE.key)), USAGE_NOT_CONTENT, USAGE.key)
        ]
        return upsert_records(con, USAGE, winners)

    return _with_connection(
        db_path,
        upsert,
        max_attempts=max_attempts,
        first_backoff_s=first_backoff_s,
        on_retry=on_retry,
    )


# --- reads and retention -------------------------------------------------------------------


def unencodable_rows(
    rows: Sequence[Any], write: Callable[[str, list[Any]], object]
) -> dict[int, Exception]:
    """The rows the warehouse cannot hold, by position, with the error each raises when
    written alone (``write(db_path, [row])``, the flush's own conversion and statements) into
    a scratch copy of the warehouse in a temporary directory: an integer beyond int64, a text
    UTF-8 cannot encode, a NULL in a required column. Only called after a flush failed."""
    bad: dict[int, Exception] = {}
    with tempfile.TemporaryDirectory(prefix="genai-unencodable-") as scratch:
        empty = os.path.join(scratch, "empty.duckdb")
        create_warehouse(empty)
        db_path = os.path.join(scratch, "check.duckdb")
        for position, row in enumerate(rows):
            shutil.copyfile(empty, db_path)  # each row alone, into an empty warehouse
            try:
                write(db_path, [row])
            except Exception as error:
                if not is_element_error(error):
                    raise
                bad[position] = error
    return bad


def unencodable_metric_rows(rows: Sequence[MetricRow]) -> dict[int, Exception]:
    """The metric rows the warehouse cannot hold, by position (``unencodable_rows``)."""
    return unencodable_rows(rows, commit_metric_rows)


def read_metrics(db_path: str, relation: str = METRICS_TABLE) -> pd.DataFrame:
    """Returns a table or a view as a DataFrame (timestamps in UTC), for summaries and reports.

    Raises:
        ValueError: ``relation`` is neither a warehouse table nor a view.
    """
    if relation not in {t.name for t in TABLES} and relation not in VIEW_NAMES:
        raise ValueError(f"unknown relation {relation!r}")
    return _with_connection(db_path, lambda con: con.sql(f"SELECT * FROM {relation}").df())


def _recompute_hours(
    con: duckdb.DuckDBPyConnection, hours: Iterable[tuple], now: dt.datetime
) -> list[dict[str, Any]]:
    """Recomputes the hourly rollups of ``hours`` ((hour, model, region)) from their minute
    rows and the daily rollups of their days from the hourly ones; upserts and returns them."""
    hours = set(hours)
    starts = sorted({h for h, _, _ in hours})
    minute_rows = [
        row
        for start in starts
        for row in _rows(
            con,
            f"SELECT * FROM {METRICS.name} WHERE window_start >= ? AND window_start < ?",
            [start, start + dt.timedelta(hours=1)],
        )
    ]
    days = sorted({s.replace(hour=0) for s in starts})
    hour_rollups = [
        row
        for day in days
        for row in _rows(
            con,
            f"SELECT * FROM {ROLLUPS.name} WHERE grain = 'hour' "
            "AND period_start >= ? AND period_start < ?",
            [day, day + dt.timedelta(days=1)],
        )
    ]
    rollups = recompute_rollups(minute_rows, hour_rollups, hours, now)
    upsert_records(con, ROLLUPS, rollups)
    return rollups


def refresh_rollups_of_days(
    con: duckdb.DuckDBPyConnection, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> list[dict[str, Any]]:
    """Recomputes, one day at a time, every hourly and daily rollup with minute rows in
    ``[start, end)`` from those rows (what retention does before it deletes them, and the first
    open of a warehouse from before the rollups); returns the rollups written."""
    written = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        next_day = day + dt.timedelta(days=1)
        hours = touched_hours(
            _rows(
                con,
                f"SELECT window_start, model, region FROM {METRICS.name} "
                "WHERE window_start >= ? AND window_start < ?",
                [day, min(next_day, end)],
            )
        )
        if hours:
            written += _recompute_hours(con, hours, now)
        day = next_day
    return written


# Retention: each table and the column its rows are dated by.
_DATED = {
    METRICS.name: "window_start",
    ROLLUPS.name: "period_start",
    FRESHNESS.name: "window_start",
    USAGE.name: "hour_start",
}


def delete_before(
    db_path: str,
    table: str,
    cutoff: dt.datetime,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> int:
    """Deletes the rows of ``table`` dated before ``cutoff`` (retention); returns how many (or,
    with ``dry_run``, how many would go, changing nothing). Before minute rows go, the rollups
    of their periods are recomputed from them, so what is kept agrees with what was deleted.
    A database file that does not exist holds no rows."""
    if not os.path.exists(db_path):
        return 0
    column = _DATED[table]

    def delete(con: duckdb.DuckDBPyConnection) -> int:
        create_tables(con)
        (count,) = con.execute(
            f"SELECT count(*) FROM {table} WHERE {column} < ?", [cutoff]
        ).fetchone()
        if count and not dry_run:
            if table == METRICS.name:
                (first,) = con.execute(f"SELECT min({column}) FROM {table}").fetchone()
                refresh_rollups_of_days(con, first, cutoff, now or dt.datetime.now(dt.UTC))
            con.execute(f"DELETE FROM {table} WHERE {column} < ?", [cutoff])
        return count

    return _with_connection(db_path, delete)


# --- Beam adapters -------------------------------------------------------------------------


class MetricsTable(EmbeddedTable):
    """The metric tables in a DuckDB file, for ``WriteTable``: the buffer keeps the newest pane
    per key, and each flush is one ``commit_metrics`` transaction. It hands back, per flush,
    the events it made visible as ``(latency_s, events)`` pairs (the run totals count them)."""

    name = "metrics_minute"
    output_type = tuple[int, int]
    step = "write_metrics_duckdb"

    def __init__(
        self,
        db_path: str,
        *,
        flush_s: int = DEFAULT_FLUSH_S,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
        clock: Callable[[], dt.datetime] = _utc_now,
    ):
        super().__init__(db_path, max_buffered_rows=max_buffered_rows, flush_s=flush_s)
        if max_attempts < 1 or first_backoff_s < 0:
            raise ValueError("need max_attempts >= 1 and first_backoff_s >= 0")
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s
        self._clock = clock  # the commit time freshness is measured to (tests fix it)
        self._visible: Counter = Counter()

    def create(self) -> None:
        create_warehouse(
            self.db_path, max_attempts=self._max_attempts, first_backoff_s=self._first_backoff_s
        )

    def new_buffer(self) -> dict[tuple[dt.datetime, str, str], MetricRow]:
        return {}

    def add(self, buffer: dict, row: MetricRow) -> None:
        current = buffer.get(_key(row))
        if current is None or pane_order(row._asdict()) > pane_order(current._asdict()):
            buffer[_key(row)] = row

    def rows(self, buffer: dict) -> Iterable[MetricRow]:
        return buffer.values()

    def unencodable(self, rows: list[MetricRow]) -> dict[int, Exception]:
        return unencodable_metric_rows(rows)

    def write(self, rows: list[MetricRow], on_retry: Callable[[], None]) -> int:
        result = commit_metric_rows(
            self.db_path,
            rows,
            max_attempts=self._max_attempts,
            first_backoff_s=self._first_backoff_s,
            on_retry=on_retry,
            clock=self._clock,
        )
        record_freshness(result.visible)
        self._visible.update(result.visible)
        return len(result.minute_rows)

    def take_outputs(self) -> list[tuple[int, int]]:
        visible, self._visible = sorted(self._visible.items()), Counter()
        return visible


class UsageTable(EmbeddedTable):
    """``usage_hourly`` in a DuckDB file, for ``WriteTable``."""

    name = "usage_hourly"
    step = "write_usage_duckdb"

    def __init__(self, db_path: str, *, flush_s: int = DEFAULT_FLUSH_S):
        super().__init__(db_path, max_buffered_rows=DEFAULT_MAX_BUFFERED_ROWS, flush_s=flush_s)

    def create(self) -> None:
        create_warehouse(self.db_path)

    def write(self, rows: list[UsageRow], on_retry: Callable[[], None]) -> int:
        return upsert_usage_rows(self.db_path, rows, on_retry=on_retry)

    def unencodable(self, rows: list[UsageRow]) -> dict[int, Exception]:
        return unencodable_rows(rows, upsert_usage_rows)


class UpsertMetrics(WriteTable):
    """Commits ``MetricRow`` panes to the DuckDB metric tables (plus their views).

    Input: PCollection[MetricRow], bounded or unbounded, any windowing. Output: ``TableWrites``:
    ``learnt``, per flush, the events it made visible by freshness bucket (``latency_s``,
    events), and ``dead_letters``, the rows the tables could not hold (``internal_error``).
    Guarantee: after every bundle has committed, ``metrics_minute``
    holds one row per ``(window_start, model, region)``, the newest pane seen, and the rollups
    and ``freshness_minute`` agree with it (see the module docstring). A failed write fails the
    bundle; its retry commits the same rows, which changes nothing already there. Keyword
    arguments: those of ``MetricsTable``.
    """

    def __init__(self, db_path: str, **kwargs):
        super().__init__(MetricsTable(db_path, **kwargs))


class UpsertUsage(WriteTable):
    """Upserts ``UsageRow`` panes into the DuckDB table ``usage_hourly`` (newest pane per key).

    Input: PCollection[UsageRow], bounded or unbounded, any windowing. Output: ``TableWrites``
    (its ``dead_letters``: rows the table could not hold). Same guarantee as ``UpsertMetrics``
    for its one table.
    """

    def __init__(self, db_path: str, flush_s: int = DEFAULT_FLUSH_S):
        super().__init__(UsageTable(db_path, flush_s=flush_s))
