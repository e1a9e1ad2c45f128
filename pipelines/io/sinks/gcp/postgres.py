"""The audit log in PostgreSQL (Cloud SQL in production), written with psycopg 3.

Table ``audit_log``: one column per field of ``audit_record.avsc`` (strings TEXT, longs BIGINT,
timestamps TIMESTAMPTZ, maps JSONB), NOT NULL where the contract says so, ``audit_id`` (a hash
of the input's identity, ``transforms.audit``) the PRIMARY KEY, plus indexes on ``recorded_at``
and ``input_id``. The DDL is derived from the Avro schema (``audit_table_ddl``).

Idempotency: one row per input. Rows are upserted, batched (``executemany``, pipelined by
psycopg) in one transaction per batch: ``INSERT ... ON CONFLICT (audit_id) DO UPDATE ... WHERE``
the record's outcome ranks higher than the stored one's
(``transforms.audit.OUTCOME_PRECEDENCE``), so a replayed or retried record is a no-op and the
row does not depend on the order records arrive in. Migration: ``create_audit_table`` drops the
former ``UNIQUE (event_id, outcome)`` (which could hold only one duplicate of an event) from a
table created with it; rows keep their ids.

Connection: ``--audit_db_url`` is a reference, resolved on the worker, so a password never
appears in pipeline options or logs: ``env:NAME`` (a variable holding the URL), ``file:PATH``
(a file holding it), or a literal ``postgresql://`` URL without a password (e.g. Cloud SQL IAM
authentication through the Auth Proxy). One connection per worker thread, reopened after an
error. Errors a retry may cure are transient: ``OperationalError`` (server down, restarted,
unreachable; serialization failures and deadlocks) and a missing table (created again by the
next attempt); the batch is retried with backoff and then dead-lettered
(``sink_failed:postgres``). A record PostgreSQL cannot hold (a NUL character in a text, which
SQLite and Avro store but PostgreSQL refuses; a text UTF-8 cannot encode; an integer beyond
BIGINT) is taken out of its batch as an ``internal_error:write_audit_postgres`` dead letter
(``unencodable_audit_rows``) and the rest is written.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any

from pipelines.io.sinks.batches import BatchSink
from schemas.contract import load_schema
from transforms.audit import outcome_precedence_sql
from transforms.deadletter import storable_text
from transforms.elements import AuditRecord, to_record

__all__ = [
    "AUDIT_TABLE",
    "AuditInsertSink",
    "audit_table_ddl",
    "create_audit_table",
    "describe_db_url",
    "insert_audit_rows",
    "resolve_db_url",
    "unencodable_audit_rows",
]

AUDIT_TABLE = "audit_log"
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 30_000
_PRIMARY_KEY = "audit_id"
# The constraint release 1 created (PostgreSQL's name for UNIQUE (event_id, outcome)), dropped.
_FORMER_UNIQUE_KEY = f"{AUDIT_TABLE}_event_id_outcome_key"
_PRIMITIVE_TO_POSTGRES = {
    "string": "TEXT",
    "bytes": "BYTEA",
    "int": "INTEGER",
    "long": "BIGINT",
    "float": "REAL",
    "double": "DOUBLE PRECISION",
    "boolean": "BOOLEAN",
}
_LOGICAL_TO_POSTGRES = {
    "timestamp-micros": "TIMESTAMPTZ",
    "timestamp-millis": "TIMESTAMPTZ",
    "date": "DATE",
    "uuid": "UUID",
}


def resolve_db_url(reference: str) -> str:
    """The PostgreSQL URL ``reference`` points at (``env:NAME``, ``file:PATH`` or a URL).

    Raises ValueError with a message that never contains the URL.
    """
    if reference.startswith("env:"):
        name = reference[len("env:") :]
        url = os.environ.get(name, "")
        if not url:
            raise ValueError(f"--audit_db_url: environment variable {name} is not set")
    elif reference.startswith("file:"):
        with open(reference[len("file:") :], encoding="utf-8") as handle:
            url = handle.read().strip()
    else:
        url = reference
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("--audit_db_url must resolve to a postgresql:// URL")
    return url


def describe_db_url(reference: str) -> str:
    """``reference`` safe for logs: the reference itself, or a URL without its credentials."""
    if reference.startswith(("env:", "file:")):
        return reference
    scheme, _, rest = reference.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _column_type(avro_type: Any) -> tuple[str, bool, bool]:
    """(PostgreSQL type, nullable, is JSON) of an Avro field type."""
    nullable = isinstance(avro_type, list) and "null" in avro_type
    if isinstance(avro_type, list):
        (avro_type,) = [t for t in avro_type if t != "null"]
    if isinstance(avro_type, str):
        return _PRIMITIVE_TO_POSTGRES[avro_type], nullable, False
    logical = avro_type.get("logicalType")
    if logical in _LOGICAL_TO_POSTGRES:
        return _LOGICAL_TO_POSTGRES[logical], nullable, False
    if avro_type["type"] in ("map", "array", "record"):
        return "JSONB", nullable, True
    return _PRIMITIVE_TO_POSTGRES[avro_type["type"]], nullable, False


@cache
def _columns() -> tuple[tuple[str, str, bool, bool], ...]:
    return tuple(
        (f["name"], *_column_type(f["type"])) for f in load_schema("audit_record")["fields"]
    )


def audit_table_ddl() -> str:
    """``CREATE TABLE IF NOT EXISTS audit_log`` (and its index), derived from the contract."""
    lines = []
    for name, pg_type, nullable, _ in _columns():
        constraint = "" if nullable else " NOT NULL"
        if name == _PRIMARY_KEY:
            constraint += " PRIMARY KEY"
        lines.append(f"  {name} {pg_type}{constraint}")
    body = ",\n".join(lines)
    return (
        f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (\n{body}\n);\n"
        f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_recorded_at ON {AUDIT_TABLE} (recorded_at)"
    )


# Run after the columns are in place: indexes input_id, which release 1 did not have.
_MIGRATIONS = (
    f"ALTER TABLE {AUDIT_TABLE} DROP CONSTRAINT IF EXISTS {_FORMER_UNIQUE_KEY}",
    f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_input_id ON {AUDIT_TABLE} (input_id)",
)


@cache
def _insert_sql() -> str:
    names = [c[0] for c in _columns()]
    marks = ", ".join("%s" for _ in names)
    updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n != _PRIMARY_KEY)
    new_rank, old_rank = outcome_precedence_sql("EXCLUDED"), outcome_precedence_sql(AUDIT_TABLE)
    return (
        f"INSERT INTO {AUDIT_TABLE} ({', '.join(names)}) VALUES ({marks}) "
        f"ON CONFLICT ({_PRIMARY_KEY}) DO UPDATE SET {updates} WHERE {new_rank} > {old_rank}"
    )


def _row(record: AuditRecord) -> tuple[Any, ...]:
    from psycopg.types.json import Jsonb

    values = to_record(record)
    return tuple(
        Jsonb(values[name]) if is_json and values[name] is not None else values[name]
        for name, _, _, is_json in _columns()
    )


def create_audit_table(conn) -> None:
    """Creates ``audit_log`` if missing. Idempotent (concurrent creators are serialised)."""
    with conn.transaction():
        # CREATE TABLE IF NOT EXISTS can still collide with a concurrent creator; a
        # transaction-scoped advisory lock makes creators take turns.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('genai_audit_log_ddl'))")
        for statement in audit_table_ddl().split(";\n"):
            conn.execute(statement)
        # Columns the contract added since the table was created (all nullable): in place.
        for name, pg_type, nullable, _ in _columns():
            if nullable:
                conn.execute(f"ALTER TABLE {AUDIT_TABLE} ADD COLUMN IF NOT EXISTS {name} {pg_type}")
        for statement in _MIGRATIONS:
            conn.execute(statement)


def insert_audit_rows(conn, records: Sequence[AuditRecord]) -> int:
    """Upserts ``records`` in one transaction; returns how many rows were inserted or
    replaced."""
    if not records:
        return 0
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(_insert_sql(), [_row(r) for r in records], returning=False)
        return max(cursor.rowcount, 0)


# --- Beam adapter --------------------------------------------------------------------------

_LOCAL = threading.local()
_CREATED: set[str] = set()
_CREATED_LOCK = threading.Lock()


def _connection(url: str):
    """This thread's open connection to ``url`` (table created once per process)."""
    import psycopg

    connections = _LOCAL.__dict__.setdefault("connections", {})
    conn = connections.get(url)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(
            url,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )
        connections[url] = conn
    with _CREATED_LOCK:
        if url not in _CREATED:
            create_audit_table(conn)
            _CREATED.add(url)
    return conn


def _drop_connection(url: str) -> None:
    conn = _LOCAL.__dict__.get("connections", {}).pop(url, None)
    if conn is not None:
        conn.close()


class AuditInsertSink(BatchSink):
    """Upserts ``AuditRecord`` rows into PostgreSQL ``audit_log``, idempotently: one row per
    ``audit_id`` (per input); replays and retries change nothing."""

    name = "postgres"
    step = "write_audit_postgres"
    id_field = "audit_id"
    num_shards = 4
    max_batch_rows = 1000

    def __init__(self, db_url: str):
        self._reference = db_url

    def setup(self) -> None:
        self._url = resolve_db_url(self._reference)

    def write(self, batch: Sequence[AuditRecord]) -> None:
        import psycopg

        try:
            insert_audit_rows(_connection(self._url), batch)
        except Exception as error:
            _drop_connection(self._url)  # reconnect on the next attempt
            if isinstance(error, psycopg.errors.UndefinedTable):
                with _CREATED_LOCK:  # dropped (or a new server): create it again
                    _CREATED.discard(self._url)
            raise

    def is_transient(self, error: Exception) -> bool:
        import psycopg

        return isinstance(error, psycopg.OperationalError | psycopg.errors.UndefinedTable)

    def unencodable(self, batch: Sequence[AuditRecord]) -> dict[int, Exception]:
        return unencodable_audit_rows(batch)


_BIGINT = (-(1 << 63), (1 << 63) - 1)


class NotEncodable(ValueError):
    """A row PostgreSQL cannot take (the message names the column, never the value)."""


def _value_problem(value: Any) -> str | None:
    """Why PostgreSQL cannot store ``value`` (a column's, or inside a JSONB one), or None: a
    text with a NUL character or one UTF-8 cannot encode, an integer beyond BIGINT."""
    if isinstance(value, str):
        if "\x00" in value or storable_text(value) is not value:
            return "a text with a NUL character or not valid Unicode"
        return None
    if isinstance(value, bool) or value is None or isinstance(value, float | dt.datetime):
        return None
    if isinstance(value, int):
        return None if _BIGINT[0] <= value <= _BIGINT[1] else "an integer beyond BIGINT"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _value_problem(str(key)) or _value_problem(item)
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for item in value:
            problem = _value_problem(item)
            if problem:
                return problem
        return None
    return f"a value of type {type(value).__name__}"


def unencodable_audit_rows(records: Sequence[AuditRecord]) -> dict[int, Exception]:
    """The records ``audit_log`` in PostgreSQL cannot hold, by position (see
    ``_value_problem``; NULL in a required column too), checked without a connection."""
    bad: dict[int, Exception] = {}
    for position, record in enumerate(records):
        values = to_record(record)
        for name, _, nullable, _ in _columns():
            value = values.get(name)
            problem = (
                f"{name} is required" if value is None and not nullable else _value_problem(value)
            )
            if problem:
                bad[position] = NotEncodable(f"{name}: {problem}")
                break
    return bad
