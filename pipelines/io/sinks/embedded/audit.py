"""Embedded audit log: ``WriteAuditLog`` writes ``AuditRecord`` elements to SQLite.

Table ``audit_log``: one column per field of ``audit_record.avsc`` (strings as TEXT, longs as
INTEGER, doubles as REAL, bytes as BLOB; timestamps as ISO-8601 UTC text with microseconds and a
``Z``, e.g. ``2026-01-27T10:00:05.000000Z``, which sorts in time order; dates as ``YYYY-MM-DD``;
maps, arrays and records as JSON text with sorted keys). Non-nullable fields are NOT NULL.

Idempotency: ``audit_id`` (a hash of the input's identity, ``transforms.audit``) is the
PRIMARY KEY, so an input has one row; ``input_id`` is indexed. Rows are upserted: a record
replaces the stored row of its ``audit_id`` only if its outcome ranks higher
(``transforms.audit.OUTCOME_PRECEDENCE``: a redelivery recorded as a duplicate of itself never
displaces ``written``), so a replayed or retried record is a no-op and the result does not
depend on the order records arrive in. Migration: a table created with the former
``UNIQUE (event_id, outcome)`` (which could hold only one duplicate of an event) is rebuilt
without it, rows kept, by ``create_audit_log``.

Concurrency: WAL journal (readers never block the writer), a busy timeout, and one short
``BEGIN IMMEDIATE`` transaction per flush; a flush that still finds the database locked is
retried with exponential backoff, and then fails the bundle (the runner retries it, which the
idempotent insert makes safe). The writer keeps one connection for the flushes of a bundle, so
its page cache stays warm (inserts with random keys into a large table mostly cost page reads),
and drops it after any error. The database is a local file, for the local stack and
single-machine runs (production writes the audit log to PostgreSQL).

Write cost (measured with callgrind and CPU time, 10k-row flushes into a 100k-row table): a
flush is a few INSERTs of 64 rows each, in input order, the NULL dead-letter columns of
written and duplicate rows left out (see ``_insert_statements``): 41k -> 32k instructions per
row in SQLite and the sqlite3 module. Measured and not taken:

* ``WITHOUT ROWID`` keyed by ``audit_id``: 14% more instructions per row, and twice the CPU
  and wall time. The rows are then stored in random key order, so a 10k-row flush rewrote
  12,000 pages instead of 4,600 (a rowid table appends its rows; only its two narrow indexes
  take random keys).
* ``PRAGMA synchronous=NORMAL``: under WAL it skips the fsync at each commit, so a power loss
  or OS crash may lose the last committed flushes (an application crash does not); their
  bundles are acknowledged by then, so nothing would write those rows again. It saved no CPU
  at 10k-row flushes, and half the wall time only of 10-row commits. We keep the default FULL.
* Sorting a flush by ``audit_id``: no fewer instructions or pages (every index page is touched
  either way).

Statements are prepared once per connection (the sqlite3 module's statement cache, kept warm
by the writer's kept connection).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import operator
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from typing import Any, NamedTuple, TypeVar

import pandas as pd

from pipelines.io.sinks.embedded.tables import EmbeddedTable, WriteTable
from pipelines.io.sinks.retry import retry_conflicts
from schemas.contract import load_schema
from transforms.audit import outcome_precedence_sql
from transforms.deadletter import is_element_error
from transforms.elements import AuditRecord

__all__ = [
    "AUDIT_TABLE",
    "WriteAuditLog",
    "audit_row",
    "audit_table_ddl",
    "create_audit_log",
    "insert_audit_records",
    "read_audit_log",
    "unencodable_audit_records",
]

_LOGGER = logging.getLogger(__name__)

AUDIT_TABLE = "audit_log"
_PRIMARY_KEY = "audit_id"
# The key of release 1, dropped (see create_audit_log): one row per (event_id, outcome).
_FORMER_UNIQUE_KEY = "UNIQUE (event_id, outcome)"

# Larger transactions write each touched index page once for more rows (random keys): with this
# and the kept connection, the audit write's share of a 100k-event backfill profile (py-spy) fell
# from 11.5% to 5.0%.
DEFAULT_MAX_BUFFERED_ROWS = 10_000
_CACHE_KIB = 64 * 1024  # page cache per connection (allocated as used)
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_FIRST_BACKOFF_S = 0.05
DEFAULT_BUSY_TIMEOUT_S = 5.0
# Streaming: seconds of processing time records are gathered before a commit. A commit per
# bundle (an fsync each, and a reopened connection) was in ~11% of a streaming run's py-spy
# samples over all threads; gathered, the audit log held the GIL in 1.6% of them.
DEFAULT_FLUSH_S = 5

_T = TypeVar("_T")

_PRIMITIVE_TO_SQLITE = {
    "string": "TEXT",
    "bytes": "BLOB",
    "int": "INTEGER",
    "long": "INTEGER",
    "float": "REAL",
    "double": "REAL",
    "boolean": "INTEGER",
}


class _Column(NamedTuple):
    name: str
    sqlite_type: str
    kind: str  # plain, timestamp, date or json: how audit_row converts a value.
    nullable: bool


def _column(field: dict[str, Any]) -> _Column:
    avro_type = field["type"]
    nullable = isinstance(avro_type, list) and "null" in avro_type
    if isinstance(avro_type, list):
        (avro_type,) = [t for t in avro_type if t != "null"]
    if isinstance(avro_type, str):
        return _Column(field["name"], _PRIMITIVE_TO_SQLITE[avro_type], "plain", nullable)
    logical = avro_type.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis"):
        return _Column(field["name"], "TEXT", "timestamp", nullable)
    if logical == "date":
        return _Column(field["name"], "TEXT", "date", nullable)
    if avro_type["type"] in ("map", "array", "record"):
        return _Column(field["name"], "TEXT", "json", nullable)
    return _Column(field["name"], _PRIMITIVE_TO_SQLITE[avro_type["type"]], "plain", nullable)


@cache
def _columns() -> tuple[_Column, ...]:
    return tuple(_column(f) for f in load_schema("audit_record")["fields"])


def audit_table_ddl(table: str = AUDIT_TABLE) -> str:
    """Returns the SQLite ``CREATE TABLE IF NOT EXISTS`` of ``audit_log`` (or ``table``)."""
    columns = []
    for c in _columns():
        constraint = "" if c.nullable else " NOT NULL"
        if c.name == _PRIMARY_KEY:
            constraint += " PRIMARY KEY"
        columns.append(f"  {c.name} {c.sqlite_type}{constraint}")
    body = ",\n".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n{body}\n)"


_INPUT_INDEX_DDL = f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_input_id ON {AUDIT_TABLE} (input_id)"


# Columns only dead-lettered and replayed records fill: NULL in the written and duplicate
# records that make up nearly all rows.
_DEAD_LETTER_COLUMNS = ("reason", "dead_letter_id")
# Rows per INSERT (one VALUES list): 64 x 13 = 832 parameters, under the 999 of older SQLite
# builds. Per-statement overhead is shared by the rows; 256 measured no better.
_ROWS_PER_STATEMENT = 64


@cache
def _insert_sql(columns: tuple[str, ...], rows: int) -> str:
    values = ", ".join([f"({', '.join('?' for _ in columns)})"] * rows)
    # Every column is set, the ones this statement leaves out included (to NULL): a row that
    # replaces another replaces all of it.
    updates = ", ".join(
        f"{name} = " + (f"excluded.{name}" if name in columns else "NULL")
        for name in _shapes().columns
        if name != _PRIMARY_KEY
    )
    new_rank, old_rank = outcome_precedence_sql("excluded"), outcome_precedence_sql(AUDIT_TABLE)
    return (
        f"INSERT INTO {AUDIT_TABLE} ({', '.join(columns)}) VALUES {values} "
        f"ON CONFLICT ({_PRIMARY_KEY}) DO UPDATE SET {updates} WHERE {new_rank} > {old_rank}"
    )


class _Shapes(NamedTuple):
    columns: tuple[str, ...]  # all, in row order
    short_columns: tuple[str, ...]  # without _DEAD_LETTER_COLUMNS
    shorten: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # a row's values of short_columns
    dead_letter_positions: tuple[int, ...]  # of _DEAD_LETTER_COLUMNS in a row


@cache
def _shapes() -> _Shapes:
    names = tuple(c.name for c in _columns())
    kept = [i for i, name in enumerate(names) if name not in _DEAD_LETTER_COLUMNS]
    return _Shapes(
        columns=names,
        short_columns=tuple(names[i] for i in kept),
        shorten=operator.itemgetter(*kept),
        dead_letter_positions=tuple(names.index(name) for name in _DEAD_LETTER_COLUMNS),
    )


def _insert_statements(rows: list[tuple[Any, ...]]) -> list[tuple[str, list[Any]]]:
    """``(sql, parameters)`` of the INSERTs that store ``rows``, in the rows' order.

    Each INSERT takes up to ``_ROWS_PER_STATEMENT`` consecutive rows (an upsert checks each
    row of a VALUES list against the rows before it, as separate statements do, so two rows of
    one input in a flush end as the one of higher precedence). Runs of rows whose
    ``_DEAD_LETTER_COLUMNS`` are NULL leave those columns out (they have no default, so they
    are stored NULL): the sqlite3 module looks up an adapter for every None it binds, which
    costs more than binding a string. Chunk sizes are powers of two, so at most 14 statement
    texts exist, each compiled once in the connection's statement cache.
    """
    shapes = _shapes()
    reason, dead_letter_id = shapes.dead_letter_positions
    statements = []
    for is_short, run in itertools.groupby(
        rows, key=lambda row: row[reason] is None and row[dead_letter_id] is None
    ):
        if is_short:
            columns, values = shapes.short_columns, list(map(shapes.shorten, run))
        else:
            columns, values = shapes.columns, list(run)
        start, size = 0, _ROWS_PER_STATEMENT
        while start < len(values):
            while size > len(values) - start:
                size //= 2
            parameters = list(itertools.chain.from_iterable(values[start : start + size]))
            statements.append((_insert_sql(columns, size), parameters))
            start += size
    return statements


_UTC = dt.UTC
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TWO_DIGITS = tuple(f"{i:02d}" for i in range(60))


def _timestamp_text(value: dt.datetime) -> str:
    """``value.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)``, assembled from the fields for a
    plain datetime (a third of strftime's cost). A naive value is local time, as astimezone
    takes it. Below year 1000 (whether %Y pads is the C library's choice) and for datetime
    subclasses, strftime itself runs."""
    if type(value) is dt.datetime:
        if value.tzinfo is not _UTC:
            value = value.astimezone(_UTC)
        if value.year >= 1000:
            two = _TWO_DIGITS
            return (
                f"{value.year}-{two[value.month]}-{two[value.day]}T{two[value.hour]}:"
                f"{two[value.minute]}:{two[value.second]}.{value.microsecond:06d}Z"
            )
    return value.astimezone(_UTC).strftime(_TIMESTAMP_FORMAT)


_escape_json_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for keys


def _json_text(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))``, assembled directly for a
    dict of str to int (json.dumps builds an encoder per call: three times the cost)."""
    if type(value) is dict:
        if not value:
            return "{}"
        parts = []
        for key, count in sorted(value.items()):
            if type(key) is not str or type(count) is not int:
                break  # bool, float, nested or non-str keys: json.dumps decides
            parts.append(f"{_escape_json_string(key)}:{count}")
        else:
            return "{" + ",".join(parts) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def audit_row(record: AuditRecord) -> tuple[Any, ...]:
    """Returns ``record`` as the parameter tuple of one ``audit_log`` row (column order).

    AuditRecord's fields are in the schema's column order (a contract test checks it). Written
    out field by field: a loop over the columns' kinds cost 3k instructions more per row.
    tests/functions/test_audit_rows.py checks it against the conversion the columns' kinds call
    for, so a schema change this misses fails there.
    """
    (
        audit_id,
        event_id,
        request_id,
        user_key,
        outcome,
        reason,
        data_class,
        redaction_counts,
        model,
        region,
        event_time,
        dead_letter_id,
        recorded_at,
        input_id,
    ) = record
    return (
        audit_id,
        event_id,
        request_id,
        user_key,
        outcome,
        reason,
        data_class,
        None if redaction_counts is None else _json_text(redaction_counts),
        model,
        region,
        None if event_time is None else _timestamp_text(event_time),
        dead_letter_id,
        None if recorded_at is None else _timestamp_text(recorded_at),
        input_id,
    )


def _is_lock_conflict(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


@contextlib.contextmanager
def _immediate_transaction(con: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock
    # upgrade; the busy timeout applies while waiting for it.
    # On an error there is no explicit ROLLBACK (which can itself fail when SQLite has already
    # rolled back): the caller closes the connection, and closing discards the transaction.
    con.execute("BEGIN IMMEDIATE")
    yield
    con.execute("COMMIT")


def _connect(db_path: str, busy_timeout_s: float) -> sqlite3.Connection:
    con = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None)
    con.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    return con


class _Connection:
    """One connection reused across flushes, opened on first use; closed after any error (a
    failed transaction is discarded by closing, see ``_immediate_transaction``)."""

    def __init__(self, db_path: str, busy_timeout_s: float):
        self._db_path = db_path
        self._busy_timeout_s = busy_timeout_s
        self._con: sqlite3.Connection | None = None

    def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._con is None:
            self._con = _connect(self._db_path, self._busy_timeout_s)
        try:
            return work(self._con)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _with_connection(
    db_path: str,
    work: Callable[[sqlite3.Connection], _T],
    *,
    max_attempts: int,
    first_backoff_s: float,
    busy_timeout_s: float,
    on_retry: Callable[[], None] = lambda: None,
    connection: _Connection | None = None,
) -> _T:
    """Runs ``work`` on a connection (autocommit mode), retrying lock conflicts.

    The busy timeout waits inside SQLite first; backoff (doubling from ``first_backoff_s`` up to
    2 s, with jitter) covers what is left. Without ``connection`` each attempt opens and closes
    its own; with it, attempts share it until one fails (see ``_Connection``).
    """

    def attempt() -> _T:
        if connection is not None:
            return connection.run(work)
        with contextlib.closing(_connect(db_path, busy_timeout_s)) as con:
            return work(con)

    return retry_conflicts(
        attempt,
        is_conflict=lambda e: isinstance(e, sqlite3.OperationalError) and _is_lock_conflict(e),
        max_attempts=max_attempts,
        first_backoff_s=first_backoff_s,
        on_retry=on_retry,
    )


def _drop_former_key(con: sqlite3.Connection) -> None:
    """Rebuilds a table created with the former ``UNIQUE (event_id, outcome)`` without it
    (SQLite cannot drop a constraint in place), keeping its rows and their ids."""
    (sql,) = con.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [AUDIT_TABLE]
    ).fetchone()
    if _FORMER_UNIQUE_KEY not in sql:
        return
    present = [row[1] for row in con.execute(f"PRAGMA table_info({AUDIT_TABLE})")]
    kept = ", ".join(c.name for c in _columns() if c.name in present)
    con.execute(f"ALTER TABLE {AUDIT_TABLE} RENAME TO {AUDIT_TABLE}_former")
    con.execute(audit_table_ddl())
    con.execute(f"INSERT INTO {AUDIT_TABLE} ({kept}) SELECT {kept} FROM {AUDIT_TABLE}_former")
    con.execute(f"DROP TABLE {AUDIT_TABLE}_former")
    _LOGGER.info("audit_log: dropped the former unique key on (event_id, outcome)")


def create_audit_log(db_path: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
    """Creates ``audit_log`` if missing and switches the database to WAL. Idempotent. An
    existing table gets the contract's new columns and loses the former unique key."""
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)

    def create(con: sqlite3.Connection) -> None:
        # The journal mode is stored in the file and cannot change inside a transaction.
        con.execute("PRAGMA journal_mode=WAL")
        with _immediate_transaction(con):
            con.execute(audit_table_ddl())
            # Columns the contract added since the file was created (all nullable): in place.
            present = {row[1] for row in con.execute(f"PRAGMA table_info({AUDIT_TABLE})")}
            for column in _columns():
                if column.name not in present and column.nullable:
                    con.execute(
                        f"ALTER TABLE {AUDIT_TABLE} ADD COLUMN {column.name} {column.sqlite_type}"
                    )
            _drop_former_key(con)
            con.execute(_INPUT_INDEX_DDL)

    _with_connection(
        db_path,
        create,
        max_attempts=DEFAULT_MAX_ATTEMPTS,
        first_backoff_s=DEFAULT_FIRST_BACKOFF_S,
        busy_timeout_s=busy_timeout_s,
    )


def insert_audit_records(
    db_path: str,
    records: Iterable[AuditRecord],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    on_retry: Callable[[], None] = lambda: None,
    connection: _Connection | None = None,
) -> int:
    """Upserts ``records`` in one transaction (a stored row is replaced only by a record of
    higher outcome precedence); returns the rows inserted or replaced.

    The table must exist (``create_audit_log``). ``connection``: reuse it (the writer's).
    """
    rows = list(map(audit_row, records))
    if not rows:
        return 0
    statements = _insert_statements(rows)  # before taking the write lock, once for all attempts

    def insert(con: sqlite3.Connection) -> int:
        with _immediate_transaction(con):
            before = con.total_changes
            for sql, parameters in statements:
                con.execute(sql, parameters)
            return con.total_changes - before

    return _with_connection(
        db_path,
        insert,
        max_attempts=max_attempts,
        first_backoff_s=first_backoff_s,
        busy_timeout_s=busy_timeout_s,
        on_retry=on_retry,
        connection=connection,
    )


def unencodable_audit_records(records: Sequence[AuditRecord]) -> dict[int, Exception]:
    """The records ``audit_log`` cannot hold, by position, with the error each raises when
    inserted alone into an in-memory copy of the table (the same statement as a flush: a text
    UTF-8 cannot encode, an integer beyond int64, a NULL in a required column)."""
    bad: dict[int, Exception] = {}
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as con:
        con.execute(audit_table_ddl())
        for position, record in enumerate(records):
            try:
                for sql, parameters in _insert_statements([audit_row(record)]):
                    con.execute(sql, parameters)
            except Exception as error:
                if not is_element_error(error):
                    raise
                bad[position] = error
    return bad


def read_audit_log(db_path: str) -> pd.DataFrame:
    """Returns ``audit_log`` as stored (text timestamps and JSON), ordered by ``audit_id``."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=DEFAULT_BUSY_TIMEOUT_S)) as con:
        cursor = con.execute(f"SELECT * FROM {AUDIT_TABLE} ORDER BY {_PRIMARY_KEY}")
        names = [d[0] for d in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=names)


class AuditLogTable(EmbeddedTable):
    """``audit_log`` in a SQLite file, for ``WriteTable``: one row per input (see the module
    docstring for the upsert rule)."""

    name = "audit_log"
    step = "write_audit_sqlite"

    def __init__(
        self,
        db_path: str,
        *,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        flush_s: int = DEFAULT_FLUSH_S,
    ):
        super().__init__(db_path, max_buffered_rows=max_buffered_rows, flush_s=flush_s)
        if max_attempts < 1 or first_backoff_s < 0 or busy_timeout_s < 0:
            raise ValueError("need max_attempts >= 1, first_backoff_s >= 0 and busy_timeout_s >= 0")
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s
        self._busy_timeout_s = busy_timeout_s
        self._connection: _Connection | None = None

    def create(self) -> None:
        create_audit_log(self.db_path, busy_timeout_s=self._busy_timeout_s)

    def open(self) -> None:
        # One connection for the flushes of a bundle: its page cache stays warm.
        self._connection = _Connection(self.db_path, self._busy_timeout_s)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()  # not kept across bundles (nor DoFn instances)
            self._connection = None

    def unencodable(self, rows: list[AuditRecord]) -> dict[int, Exception]:
        return unencodable_audit_records(rows)

    def write(self, rows: list[AuditRecord], on_retry: Callable[[], None]) -> int:
        return insert_audit_records(
            self.db_path,
            rows,
            max_attempts=self._max_attempts,
            first_backoff_s=self._first_backoff_s,
            busy_timeout_s=self._busy_timeout_s,
            on_retry=on_retry,
            connection=self._connection,
        )

    def __getstate__(self):
        return {**self.__dict__, "_connection": None}


class WriteAuditLog(WriteTable):
    """Writes ``AuditRecord`` elements to the SQLite table ``audit_log``, idempotently.

    Input: PCollection[AuditRecord], bounded or unbounded, any windowing. Output: an empty
    PCollection. Guarantee: one row per ``audit_id`` (per input), the record of highest outcome
    precedence; replays and retried bundles change nothing. Rows are committed when their
    bundle finishes (``WriteTable``); a flush that cannot get the write lock after
    ``max_attempts`` fails the bundle, so nothing is dropped silently. Keyword arguments: those
    of ``AuditLogTable``.
    """

    def __init__(self, db_path: str, **kwargs):
        super().__init__(AuditLogTable(db_path, **kwargs))
