"""BigQuery sinks through the official ``google-cloud-bigquery`` client.

Tables are created from the Avro contract (``schemas.contract.bigquery_schema``), never from
hand-written DDL:

* the warehouse tables of ``pipelines.io.sinks.warehouse_tables``: ``metrics_minute``
  (``metric_row.avsc``), hour partitions of ``window_start`` expiring after
  ``MINUTE_RETENTION_DAYS``, clustered by ``model``, ``region`` (hour partitions: each commit
  reads and MERGEs only the hours it touches); ``metrics_rollup``, ``freshness_minute`` and
  ``usage_hourly``, day partitions expiring after 365 days. Clustering is set through the table
  API, not DDL (the emulator drops DDL clustering; the API works on both).
* ``audit_log`` (``audit_record.avsc``): day partitions of ``recorded_at``, no expiry (audit
  retention is a policy decision), clustered by ``outcome``, ``event_id``; one record per
  input (``audit_id``), read through ``audit_log_unique``.
* views: the metric views of ``pipelines/sql`` (``pipelines.views.VIEW_NAMES``) and
  ``audit_log_unique``.

``MetricsMergeSink``: the commit of ``metrics_commit``, as the embedded warehouse's. Per batch:
one query fetches the minute rows of the hours it touches and one the hourly rollups of its
days; ``plan_panes`` decides which panes win and measures the freshness of the events they make
visible, and the rollups and per-minute freshness of every touched period are recomputed from
the minute rows; then one ``MERGE`` per table writes them, its source the rows themselves as an
array-of-structs query parameter (no staging table, no load job), naming the touched range so
BigQuery prunes to those partitions.
The minute rows are MERGEd first: a retry after a later statement failed finds them stored
(nothing more becomes visible, so freshness is counted once) and recomputes the derived rows.
Idempotency comes from the pane rule, not from insert ids (which the emulator does not
implement and BigQuery applies only on a best-effort basis). One writer (one shard), so two
commits never interleave. Cost: ADR 0007. ``UsageMergeSink``: the same pane rule for
``usage_hourly`` (one query for the stored rows of the batch's users, one ``MERGE``).

``AuditAppendSink``: appends through the Storage Write API's default stream
(``pipelines.io.sinks.gcp.write_api``). At least once: a batch retried after a lost response can
store a record twice; the ``audit_log_unique`` view shows one row per ``audit_id`` (per input:
``audit_id`` is a hash of the input's identity), the record of highest outcome precedence, as
PostgreSQL keeps it. Rows BigQuery refuses one by one become ``sink_failed:bigquery`` dead
letters, the rest is stored. The exact, idempotent audit store is PostgreSQL
(``pipelines.io.sinks.gcp.postgres``); BigQuery's copy is for analytics.

A batch that fails for a row BigQuery cannot take (an integer beyond INT64, a float that is not
finite, a text UTF-8 cannot encode: ``unencodable`` checks each row against the schema) has those
rows taken out as ``internal_error:<step>`` dead letters, and the rest is written.

Both sinks retry transient errors (5xx, 429, connection and timeout errors, including an
emulator that is down) with backoff, then dead-letter the rows (``sink_failed:bigquery``); the
client's own retries are switched off so that the backoff is the one configured here. Clients
honour ``BIGQUERY_EMULATOR_HOST`` (the local stack) and use Application Default Credentials.

Length (over 600 lines): table creation from the contract and the MERGE statements that depend
on those tables' columns and partitions are one unit.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import math
import threading
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from pipelines.io.sinks.batches import BatchSink, RowsRefused
from pipelines.io.sinks.gcp.write_api import (
    AppendFailed,
    RowEncoder,
    append_rows,
    emulator_serialized,
)
from pipelines.io.sinks.metrics_commit import (
    USAGE_NOT_CONTENT,
    CommitResult,
    latest_records,
    plan_panes,
    recompute_freshness,
    recompute_rollups,
    record_freshness,
    replaces,
    touched_hours,
)
from pipelines.io.sinks.warehouse_tables import (
    FRESHNESS,
    METRICS,
    ROLLUPS,
    TABLES,
    USAGE,
    Table,
    fields_of,
    table_record,
)
from pipelines.views import VIEW_NAMES, bigquery_view_sql
from schemas.contract import bigquery_schema, load_schema
from transforms.deadletter import is_element_error, storable_text
from transforms.elements import AuditRecord, MetricRow, UsageRow, to_record

__all__ = [
    "AUDIT_TABLE",
    "AUDIT_VIEW",
    "METRICS_TABLE",
    "MINUTE_RETENTION_DAYS",
    "PARTITION_EXPIRATION_DAYS",
    "USAGE_FLUSH_S",
    "AuditAppendSink",
    "BigQuerySink",
    "MetricsMergeSink",
    "UsageMergeSink",
    "append_audit_rows",
    "audit_table",
    "bigquery_client",
    "create_bigquery_objects",
    "encode_audit_row",
    "is_transient",
    "merge_metric_rows",
    "merge_sql",
    "merge_usage_rows",
    "metrics_table",
    "partition_column",
    "split_dataset",
    "warehouse_table",
]

_LOGGER = logging.getLogger(__name__)

METRICS_TABLE = METRICS.name
AUDIT_TABLE = "audit_log"
AUDIT_VIEW = "audit_log_unique"
PARTITION_EXPIRATION_DAYS = 365  # rollups, per-minute freshness, usage: a year
MINUTE_RETENTION_DAYS = 30  # minute rows (the Terraform variable metrics_minute_retention_days)
# Usage panes fire every --usage_firing_s (300 s): batching them for a minute at least keeps the
# MERGEs on usage_hourly few whatever --sink_flush_s is.
USAGE_FLUSH_S = 60
REQUEST_TIMEOUT_S = 30.0
_MS_PER_DAY = 86_400_000
_READY: set[str] = set()  # datasets whose objects this process created
_READY_LOCK = threading.Lock()


def split_dataset(dataset: str) -> tuple[str, str]:
    """``PROJECT.DATASET`` -> (project, dataset); raises ValueError otherwise."""
    project, _, name = dataset.partition(".")
    if not project or not name or "." in name or "`" in dataset:
        raise ValueError(f"a BigQuery dataset must be PROJECT.DATASET, got {dataset!r}")
    return project, name


@cache
def bigquery_client(project: str):
    """One client per project and process (thread-safe; honours BIGQUERY_EMULATOR_HOST)."""
    from google.cloud import bigquery

    return bigquery.Client(project=project)


# --- tables and views ----------------------------------------------------------------------


def _schema(name: str) -> list:
    from google.cloud import bigquery

    return [bigquery.SchemaField.from_api_repr(f) for f in bigquery_schema(name)]


# Per table: (partition column, partition type, days kept, clustering).
_LAYOUT = {
    METRICS.name: ("window_start", "HOUR", MINUTE_RETENTION_DAYS, ["model", "region"]),
    ROLLUPS.name: ("period_start", "DAY", PARTITION_EXPIRATION_DAYS, ["grain", "model", "region"]),
    FRESHNESS.name: ("window_start", "DAY", PARTITION_EXPIRATION_DAYS, None),
    USAGE.name: ("hour_start", "DAY", PARTITION_EXPIRATION_DAYS, ["user_key", "model"]),
}


def partition_column(table: Table) -> str:
    """The TIMESTAMP column ``table`` is partitioned by in BigQuery (``_LAYOUT``)."""
    return _LAYOUT[table.name][0]


def warehouse_table(dataset: str, table: Table):
    """The definition (not created) of a warehouse table: schema from its contract, time
    partitions that expire, clustering (``_LAYOUT``)."""
    from google.cloud import bigquery

    column, kind, days, clustering = _LAYOUT[table.name]
    definition = bigquery.Table(f"{dataset}.{table.name}", schema=_schema(table.schema))
    definition.description = load_schema(table.schema)["doc"]
    definition.time_partitioning = bigquery.TimePartitioning(
        type_=kind, field=column, expiration_ms=days * _MS_PER_DAY
    )
    definition.clustering_fields = clustering
    return definition


def metrics_table(dataset: str):
    """The ``metrics_minute`` table definition (not created)."""
    return warehouse_table(dataset, METRICS)


def audit_table(dataset: str):
    """The ``audit_log`` table definition (not created)."""
    from google.cloud import bigquery

    table = bigquery.Table(f"{dataset}.{AUDIT_TABLE}", schema=_schema("audit_record"))
    table.description = load_schema("audit_record")["doc"]
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field="recorded_at"
    )
    table.clustering_fields = ["outcome", "event_id"]
    return table


def _audit_view_sql(dataset: str) -> str:
    body = resources.files("pipelines").joinpath("sql", f"{AUDIT_VIEW}.sql").read_text("utf-8")
    body = body.replace("{dataset}", dataset)
    return f"CREATE OR REPLACE VIEW `{dataset}.{AUDIT_VIEW}` AS\n{body}"


def _run(client, sql: str, parameters: Sequence[Any] = ()):
    """Runs one query job (no client-side retries: the sink's own backoff decides); returns its
    rows."""
    from google.cloud import bigquery

    job = client.query(
        sql,
        job_config=bigquery.QueryJobConfig(query_parameters=list(parameters)),
        retry=None,
        job_retry=None,
        timeout=REQUEST_TIMEOUT_S,
    )
    return job.result(retry=None, job_retry=None, timeout=REQUEST_TIMEOUT_S * 4)


def create_bigquery_objects(client, dataset: str) -> None:
    """Creates the dataset, tables (if missing) and views (replaced). Idempotent."""
    from google.cloud import bigquery

    split_dataset(dataset)
    client.create_dataset(
        bigquery.Dataset(dataset), exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT_S
    )
    for table in (*(warehouse_table(dataset, t) for t in TABLES), audit_table(dataset)):
        client.create_table(table, exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT_S)
    for name in VIEW_NAMES:
        _run(client, bigquery_view_sql(name, dataset))
    _run(client, _audit_view_sql(dataset))


def _ensure_objects(client, dataset: str) -> None:
    with _READY_LOCK:
        if dataset in _READY:
            return
        create_bigquery_objects(client, dataset)
        _READY.add(dataset)
    _LOGGER.info("BigQuery tables and views ready in %s", dataset)


def _forget_objects(dataset: str) -> None:
    """The next write creates the dataset's objects again (after a NotFound)."""
    with _READY_LOCK:
        _READY.discard(dataset)


# --- metrics and usage: fetch, commit, MERGE -----------------------------------------------


def _source_column(field: dict[str, Any]) -> str:
    name = field["name"]
    if field["type"] == "BYTES" and field["mode"] != "REPEATED":
        return f"FROM_BASE64(r.`{name}`) AS `{name}`"
    return f"r.`{name}` AS `{name}`"


def merge_sql(dataset: str, table: Table) -> str:
    """The MERGE of ``@rows`` (one per key, each to be stored as it is) into ``table``. The
    constant range ``@min_time``..``@max_time`` on the partition column lets BigQuery prune
    the target to the touched partitions."""
    fields = fields_of(table)
    names = [f["name"] for f in fields]
    partition = _LAYOUT[table.name][0]
    on = " AND ".join(f"t.`{c}` = s.`{c}`" for c in table.key)
    updates = ", ".join(f"`{n}` = s.`{n}`" for n in names if n not in table.key)
    columns = ", ".join(f"`{n}`" for n in names)
    values = ", ".join(f"s.`{n}`" for n in names)
    # Columns named one by one: the emulator does not expand `SELECT *` over an array of structs.
    source = ", ".join(_source_column(f) for f in fields)
    return (
        f"MERGE `{dataset}.{table.name}` AS t\n"
        f"USING (SELECT {source} FROM UNNEST(@rows) AS r) AS s\n"
        f"ON {on} AND t.`{partition}` BETWEEN @min_time AND @max_time\n"
        f"WHEN MATCHED THEN\n  UPDATE SET {updates}\n"
        f"WHEN NOT MATCHED THEN\n  INSERT ({columns}) VALUES ({values})"
    )


def _param_type(field: dict[str, Any]):
    from google.cloud.bigquery import query

    if field["type"] == "RECORD":
        return query.StructQueryParameterType(
            *(_named_param_type(f) for f in field["fields"]), name=None
        )
    return field["type"]


def _named_param_type(field: dict[str, Any]):
    from google.cloud.bigquery import query

    if field["mode"] == "REPEATED":
        return query.ArrayQueryParameterType(_param_type(field), name=field["name"])
    if field["type"] == "RECORD":
        return query.StructQueryParameterType(
            *(_named_param_type(f) for f in field["fields"]), name=field["name"]
        )
    param_type = "STRING" if field["type"] == "BYTES" else field["type"]
    return query.ScalarQueryParameterType(param_type, name=field["name"])


def _param(field: dict[str, Any], value: Any, name: str | None, repeated: bool):
    from google.cloud.bigquery import query

    if repeated:
        return query.ArrayQueryParameter(
            name, _param_type(field), [_param(field, v, None, False) for v in value or ()]
        )
    if field["type"] == "RECORD":
        return query.StructQueryParameter(
            name,
            *(
                _param(f, value[f["name"]], f["name"], f["mode"] == "REPEATED")
                for f in field["fields"]
            ),
        )
    if field["type"] == "BYTES":
        # Top-level BYTES go in as base64 text, decoded by FROM_BASE64 in the query: the
        # emulator stores a BYTES parameter's base64 text instead of decoding it.
        encoded = None if value is None else base64.b64encode(value).decode("ascii")
        return query.ScalarQueryParameter(name, "STRING", encoded)
    return query.ScalarQueryParameter(name, field["type"], value)


def _rows_parameter(records: Sequence[Any], table: Table = METRICS):
    """Records (or elements) of ``table`` as the ``@rows`` array-of-structs parameter."""
    record_field = {
        "name": "rows",
        "type": "RECORD",
        "mode": "NULLABLE",
        "fields": fields_of(table),
    }
    records = [r if isinstance(r, dict) else table_record(table, r) for r in records]
    return _param(record_field, records, "rows", True)


def _merge(client, dataset: str, table: Table, records: Sequence[dict[str, Any]]) -> None:
    from google.cloud.bigquery import query

    if not records:
        return
    partition = _LAYOUT[table.name][0]
    times = [r[partition] for r in records]
    _run(
        client,
        merge_sql(dataset, table),
        [
            _rows_parameter(records, table),
            query.ScalarQueryParameter("min_time", "TIMESTAMP", min(times)),
            query.ScalarQueryParameter("max_time", "TIMESTAMP", max(times)),
        ],
    )


def _fetch(client, sql: str, parameters: Sequence[Any]) -> list[dict[str, Any]]:
    return [dict(row.items()) for row in _run(client, sql, parameters)]


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _touched_rows(client, dataset: str, rows: Sequence[MetricRow]) -> tuple[list, list]:
    """The stored minute rows of the hours ``rows`` touch, and the hourly rollups of their
    days: what a commit reads."""
    from google.cloud.bigquery import query

    hours = sorted({_hour(r.window_start) for r in rows})
    days = sorted({h.replace(hour=0) for h in hours})
    minute_rows = _fetch(
        client,
        f"SELECT * FROM `{dataset}.{METRICS.name}` WHERE window_start >= @low "
        "AND window_start < @high AND TIMESTAMP_TRUNC(window_start, HOUR) IN UNNEST(@hours)",
        [
            query.ScalarQueryParameter("low", "TIMESTAMP", hours[0]),
            query.ScalarQueryParameter("high", "TIMESTAMP", hours[-1] + dt.timedelta(hours=1)),
            query.ArrayQueryParameter("hours", "TIMESTAMP", hours),
        ],
    )
    hour_rollups = _fetch(
        client,
        f"SELECT * FROM `{dataset}.{ROLLUPS.name}` WHERE grain = 'hour' "
        "AND period_start >= @low AND period_start < @high "
        "AND TIMESTAMP_TRUNC(period_start, DAY) IN UNNEST(@days)",
        [
            query.ScalarQueryParameter("low", "TIMESTAMP", days[0]),
            query.ScalarQueryParameter("high", "TIMESTAMP", days[-1] + dt.timedelta(days=1)),
            query.ArrayQueryParameter("days", "TIMESTAMP", days),
        ],
    )
    return minute_rows, hour_rollups


def merge_metric_rows(
    client,
    dataset: str,
    rows: Sequence[MetricRow],
    clock=lambda: dt.datetime.now(dt.UTC),
) -> CommitResult | None:
    """Commits metric panes to BigQuery (see the module docstring); returns what it wrote
    (None for an empty batch). ``clock``: the commit time freshness is measured to, read just
    before the minute rows are MERGEd."""
    incoming = latest_records(METRICS, (table_record(METRICS, r) for r in rows))
    if not incoming:
        return None
    _ensure_objects(client, dataset)
    minute_rows, hour_rollups = _touched_rows(client, dataset, rows)
    current = {tuple(r[c] for c in METRICS.key): r for r in minute_rows}
    now = clock()
    plan = plan_panes(incoming, current, now)
    current.update({tuple(r[c] for c in METRICS.key): r for r in plan.winners})
    # Every period the batch touches is recomputed, winners or not: a retried batch whose rows
    # are already stored still repairs derived rows an earlier attempt failed to write.
    rollups = recompute_rollups(current.values(), hour_rollups, touched_hours(incoming), now)
    windows = {r["window_start"] for r in incoming}
    freshness = recompute_freshness(current.values(), windows, now)
    _merge(client, dataset, METRICS, plan.winners)
    record_freshness(plan.visible)  # once: a retry finds these rows stored
    _merge(client, dataset, ROLLUPS, rollups)
    _merge(client, dataset, FRESHNESS, freshness)
    return CommitResult(plan.winners, rollups, freshness, plan.visible)


def merge_usage_rows(client, dataset: str, rows: Sequence[UsageRow]) -> int:
    """MERGEs usage panes into ``usage_hourly``, each replacing the stored row of its key only
    under the pane rule; returns the rows that did."""
    from google.cloud.bigquery import query

    incoming = latest_records(USAGE, (table_record(USAGE, r) for r in rows))
    if not incoming:
        return 0
    _ensure_objects(client, dataset)
    hours = [r["hour_start"] for r in incoming]
    stored = {
        tuple(r[c] for c in USAGE.key): r
        for r in _fetch(
            client,
            f"SELECT * FROM `{dataset}.{USAGE.name}` WHERE hour_start BETWEEN @low AND @high "
            "AND user_key IN UNNEST(@users)",
            [
                query.ScalarQueryParameter("low", "TIMESTAMP", min(hours)),
                query.ScalarQueryParameter("high", "TIMESTAMP", max(hours)),
                query.ArrayQueryParameter(
                    "users", "STRING", sorted({r["user_key"] for r in incoming})
                ),
            ],
        )
    }
    winners = [
        r
        for r in incoming
        if replaces(r, stored.get(tuple(r[c] for c in USAGE.key)), USAGE_NOT_CONTENT, USAGE.key)
    ]
    _merge(client, dataset, USAGE, winners)
    return len(winners)


# --- audit: Storage Write API --------------------------------------------------------------


@cache
def _audit_encoder() -> RowEncoder:
    return RowEncoder(bigquery_schema("audit_record"), "AuditRecord")


def encode_audit_row(record: AuditRecord) -> bytes:
    """``record`` as the Storage Write API row ``append_audit_rows`` sends (protocol buffer)."""
    return _audit_encoder().encode(to_record(record))


def append_audit_rows(client, dataset: str, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Appends ``records`` to ``audit_log`` (tables created if missing), each ``audit_id`` once
    per call; returns the records BigQuery refused (none of them stored; the rest is)."""
    # The same record twice in a batch (a third copy of an event is a second "duplicate" with
    # the same audit_id) is sent once.
    records = list({r.audit_id: r for r in reversed(records)}.values())[::-1]
    if not records:
        return []
    _ensure_objects(client, dataset)
    refused = append_rows(
        f"{dataset}.{AUDIT_TABLE}", _audit_encoder(), [to_record(r) for r in records]
    )
    return [records[i] for i in refused]


# --- what BigQuery cannot take ---------------------------------------------------------------

_INT64 = (-(1 << 63), (1 << 63) - 1)


def _value_problem(field: dict[str, Any], value: Any) -> str | None:
    """Why BigQuery cannot take ``value`` for ``field`` (a BigQuery schema field), or None:
    an integer beyond INT64, a float that is not finite, a text UTF-8 cannot encode."""
    if value is None:
        return None if field["mode"] != "REQUIRED" else f"{field['name']} is required"
    if field["mode"] == "REPEATED":
        inner = {**field, "mode": "NULLABLE"}
        for item in value:
            problem = _value_problem(inner, item)
            if problem:
                return problem
        return None
    kind = field["type"]
    if kind == "RECORD":
        return _record_problem(field["fields"], value)
    if kind == "INT64" and not (isinstance(value, int) and _INT64[0] <= value <= _INT64[1]):
        return f"{field['name']} is not an INT64"
    if kind == "FLOAT64" and not (isinstance(value, int | float) and math.isfinite(value)):
        return f"{field['name']} is not a finite FLOAT64"
    if kind == "STRING" and (not isinstance(value, str) or storable_text(value) is not value):
        return f"{field['name']} is not valid Unicode text"
    return None


def _record_problem(fields: Sequence[dict[str, Any]], record: dict[str, Any]) -> str | None:
    for field in fields:
        problem = _value_problem(field, record.get(field["name"]))
        if problem:
            return problem
    return None


class NotEncodable(ValueError):
    """A row BigQuery cannot take (the message names the field, never the value)."""


def _unencodable(rows: Sequence[Any], schema: str, convert) -> dict[int, Exception]:
    fields = bigquery_schema(schema)
    bad: dict[int, Exception] = {}
    for position, row in enumerate(rows):
        try:
            problem = _record_problem(fields, convert(row))
        except Exception as error:
            if not is_element_error(error):
                raise
            bad[position] = error
            continue
        if problem:
            bad[position] = NotEncodable(problem)
    return bad


# --- Beam adapters -------------------------------------------------------------------------


def is_transient(error: Exception) -> bool:
    """5xx, 429, timeouts and connection failures (an emulator that is down included), an
    append the Write API failed with a retryable status, and NotFound: an append to a table
    created moments ago can meet it, and a dropped table is created again by the next
    attempt."""
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(
        error,
        api_exceptions.ServerError
        | api_exceptions.TooManyRequests
        | api_exceptions.RetryError
        | auth_exceptions.TransportError
        | requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | api_exceptions.NotFound
        | api_exceptions.Aborted
        | ConnectionError
        | TimeoutError,
    ):
        return True
    if isinstance(error, AppendFailed):
        return error.transient
    # A 403 rateLimitExceeded is throttling, not a permission problem.
    return isinstance(error, api_exceptions.Forbidden) and "rateLimitExceeded" in str(error)


def _is_rejected(error: Exception) -> bool:
    from google.api_core import exceptions as api_exceptions

    return isinstance(error, api_exceptions.BadRequest) or (
        isinstance(error, AppendFailed) and not error.transient
    )


class BigQuerySink(BatchSink):
    """What the BigQuery sinks share: the client, table re-creation after a NotFound, and
    which errors are retried (``is_transient``) or refused (a bad request)."""

    name = "bigquery"

    def __init__(self, dataset: str):
        split_dataset(dataset)
        self._dataset = dataset

    def setup(self) -> None:
        # No network here: the tables are created by the first write, which is retried.
        self._client = bigquery_client(split_dataset(self._dataset)[0])

    def write(self, batch: Sequence[Any]) -> None:
        from google.api_core.exceptions import NotFound

        try:
            with emulator_serialized():
                self._write(batch)
        except NotFound:
            _forget_objects(self._dataset)
            raise

    def _write(self, batch: Sequence[Any]) -> None:
        raise NotImplementedError

    def is_transient(self, error: Exception) -> bool:
        return is_transient(error)

    def is_rejected(self, error: Exception) -> bool:
        return _is_rejected(error)


class MetricsMergeSink(BigQuerySink):
    """Commits ``MetricRow`` panes to the BigQuery metric tables (see the module docstring): one
    writer (one shard), so commits on the tables never run concurrently."""

    step = "write_metrics_bigquery"
    id_field = "model"

    def _write(self, batch: Sequence[MetricRow]) -> None:
        merge_metric_rows(self._client, self._dataset, batch)

    def unencodable(self, batch: Sequence[MetricRow]) -> dict[int, Exception]:
        return _unencodable(batch, "metric_row", lambda row: table_record(METRICS, row))


class UsageMergeSink(BigQuerySink):
    """MERGEs ``UsageRow`` panes into ``usage_hourly`` (see the module docstring); one writer."""

    step = "write_usage_bigquery"
    id_field = "user_key"

    def _write(self, batch: Sequence[UsageRow]) -> None:
        merge_usage_rows(self._client, self._dataset, batch)

    def unencodable(self, batch: Sequence[UsageRow]) -> dict[int, Exception]:
        return _unencodable(batch, "usage_row", lambda row: table_record(USAGE, row))


class AuditAppendSink(BigQuerySink):
    """Appends ``AuditRecord`` rows to ``audit_log`` through the Storage Write API (see the
    module docstring); rows refused one by one are dead-lettered, the rest stored."""

    step = "write_audit_bigquery"
    id_field = "audit_id"
    num_shards = 4

    def _write(self, batch: Sequence[AuditRecord]) -> None:
        refused = append_audit_rows(self._client, self._dataset, batch)
        if refused:
            raise RowsRefused(refused)

    def unencodable(self, batch: Sequence[AuditRecord]) -> dict[int, Exception]:
        return _unencodable(batch, "audit_record", _audit_row_values)


def _audit_row_values(record: AuditRecord) -> dict[str, Any]:
    # What append_audit_rows sends (its encoding's checks), with the maps as key/value lists
    # for the checks of BigQuery's limits.
    encode_audit_row(record)
    return {
        name: [{"key": k, "value": v} for k, v in sorted(value.items())]
        if isinstance(value, dict)
        else value
        for name, value in to_record(record).items()
    }
