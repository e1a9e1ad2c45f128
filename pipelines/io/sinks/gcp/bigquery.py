"""BigQuery sinks through the official ``google-cloud-bigquery`` client.

Tables are created from the Avro contract (``schemas.contract.bigquery_schema``), never from
hand-written DDL:

* ``metrics_minute`` (``metric_row.avsc``): day partitions of ``window_start`` (so
  ``DATE(window_start)``) expiring after 365 days, clustered by ``model``, ``region``. Clustering is
  set through the table API, not DDL (the emulator drops DDL clustering; the API works on both).
* ``audit_log`` (``audit_record.avsc``): day partitions of ``recorded_at``, no expiry (audit
  retention is a policy decision), clustered by ``outcome``, ``event_id``.
* views: the metric views of ``pipelines/sql`` (``pipelines.views.VIEW_NAMES``: daily usage, latency
  percentiles, model utilisation, policy-flag rates, freshness) and ``audit_log_unique``.

``MergeMetrics``: exactly one row per ``(window_start, model, region)``. Each batch of panes is
reduced to the newest pane per key and applied with one ``MERGE`` whose source is the batch itself,
passed as an array-of-structs query parameter (no staging table, no load job). The rule is the
embedded warehouse's: a pane replaces the stored row only if it has a larger ``pane_index``, or the
same ``pane_index``, a later ``emitted_at`` and different metrics; so late panes correct a row,
and retries, redeliveries and replays change nothing. Idempotency comes from this rule, not from
insert ids (which the emulator does not implement and BigQuery applies only on a best-effort
basis). The MERGE names the touched ``window_start`` range, so BigQuery prunes it to those
partitions. Cost and the alternative (append plus a latest-pane view): README.

``AuditAppendSink``: appends through the Storage Write API's default stream
(``pipelines.io.sinks.gcp.write_api``). At least once: a batch retried after a lost response can
store a record twice; the ``audit_log_unique`` view shows one row per ``audit_id``. Rows
BigQuery refuses one by one become ``sink_failed:bigquery`` dead letters, the rest is stored.
The exact, idempotent audit store is PostgreSQL (``pipelines.io.sinks.gcp.postgres``);
BigQuery's copy is for analytics.

Both sinks retry transient errors (5xx, 429, connection and timeout errors, including an
emulator that is down) with backoff, then dead-letter the rows (``sink_failed:bigquery``); the
client's own retries are switched off so that the backoff is the one configured here. Clients
honour ``BIGQUERY_EMULATOR_HOST`` (the local stack) and use Application Default Credentials.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from pipelines.io.sinks.batches import BatchSink, RowsRefused
from pipelines.io.sinks.embedded.warehouse import (
    KEY_COLUMNS,
    NOT_CONTENT,
    latest_panes,
    source_rank_sql,
    warehouse_record,
)
from pipelines.io.sinks.gcp.write_api import (
    AppendFailed,
    RowEncoder,
    append_rows,
    emulator_serialized,
)
from pipelines.views import VIEW_NAMES, bigquery_view_sql
from schemas.contract import bigquery_schema, load_schema
from transforms.elements import AuditRecord, MetricRow, to_record

__all__ = [
    "AUDIT_TABLE",
    "AUDIT_VIEW",
    "METRICS_TABLE",
    "PARTITION_EXPIRATION_DAYS",
    "AuditAppendSink",
    "BigQuerySink",
    "MetricsMergeSink",
    "append_audit_rows",
    "audit_table",
    "bigquery_client",
    "create_bigquery_objects",
    "is_transient",
    "merge_metric_rows",
    "metrics_merge_sql",
    "metrics_table",
    "split_dataset",
]

_LOGGER = logging.getLogger(__name__)

METRICS_TABLE = "metrics_minute"
AUDIT_TABLE = "audit_log"
AUDIT_VIEW = "audit_log_unique"
PARTITION_EXPIRATION_DAYS = 365
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


def metrics_table(dataset: str):
    """The ``metrics_minute`` table definition (not created)."""
    from google.cloud import bigquery

    table = bigquery.Table(f"{dataset}.{METRICS_TABLE}", schema=_schema("metric_row"))
    table.description = load_schema("metric_row")["doc"]
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY,
        field="window_start",
        expiration_ms=PARTITION_EXPIRATION_DAYS * _MS_PER_DAY,
    )
    table.clustering_fields = ["model", "region"]
    return table


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


def _run(client, sql: str, parameters: Sequence[Any] = ()) -> None:
    from google.cloud import bigquery

    job = client.query(
        sql,
        job_config=bigquery.QueryJobConfig(query_parameters=list(parameters)),
        retry=None,
        job_retry=None,
        timeout=REQUEST_TIMEOUT_S,
    )
    job.result(retry=None, job_retry=None, timeout=REQUEST_TIMEOUT_S * 4)


def create_bigquery_objects(client, dataset: str) -> None:
    """Creates the dataset, tables (if missing) and views (replaced). Idempotent."""
    from google.cloud import bigquery

    split_dataset(dataset)
    client.create_dataset(
        bigquery.Dataset(dataset), exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT_S
    )
    for table in (metrics_table(dataset), audit_table(dataset)):
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


# --- metrics: MERGE ------------------------------------------------------------------------


@cache
def _metric_fields() -> tuple[dict[str, Any], ...]:
    return tuple(bigquery_schema("metric_row"))


def _differs(field: dict[str, Any]) -> str:
    name = field["name"]
    if field["mode"] == "REPEATED" or field["type"] == "RECORD":
        # Arrays have no equality in BigQuery; their JSON text is deterministic.
        return f"TO_JSON_STRING(s.`{name}`) != TO_JSON_STRING(t.`{name}`)"
    return f"s.`{name}` IS DISTINCT FROM t.`{name}`"


def metrics_merge_sql(dataset: str) -> str:
    """The MERGE of a batch (``@rows``, one row per key) into ``metrics_minute``."""
    names = [f["name"] for f in _metric_fields()]
    content = [f for f in _metric_fields() if f["name"] not in (*KEY_COLUMNS, *NOT_CONTENT)]
    on = " AND ".join(f"t.`{c}` = s.`{c}`" for c in KEY_COLUMNS)
    updates = ", ".join(f"`{n}` = s.`{n}`" for n in names if n not in KEY_COLUMNS)
    columns = ", ".join(f"`{n}`" for n in names)
    values = ", ".join(f"s.`{n}`" for n in names)
    differs = " OR ".join(_differs(f) for f in content)
    # The warehouse's upsert rule (pipelines.io.sinks.embedded.warehouse): a backfill row
    # outranks a streaming one (or one from before the column existed), then the newest pane
    # wins, and a replay of the same pane with the same values changes nothing.
    new_rank, old_rank = source_rank_sql("s"), source_rank_sql("t")
    # Columns named one by one: the emulator does not expand `SELECT *` over an array of structs.
    source = ", ".join(_source_column(f) for f in _metric_fields())
    return (
        f"MERGE `{dataset}.{METRICS_TABLE}` AS t\n"
        f"USING (SELECT {source} FROM UNNEST(@rows) AS r) AS s\n"
        # The constant range lets BigQuery prune the target to the touched partitions.
        f"ON {on} AND t.window_start BETWEEN @min_window_start AND @max_window_start\n"
        f"WHEN MATCHED AND ({new_rank} > {old_rank} OR ({new_rank} = {old_rank} AND "
        "(s.pane_index > t.pane_index OR (s.pane_index = t.pane_index AND "
        f"s.emitted_at > t.emitted_at AND ({differs}))))) THEN\n"
        f"  UPDATE SET {updates}\n"
        f"WHEN NOT MATCHED THEN\n  INSERT ({columns}) VALUES ({values})"
    )


def _source_column(field: dict[str, Any]) -> str:
    name = field["name"]
    if field["type"] == "BYTES" and field["mode"] != "REPEATED":
        return f"FROM_BASE64(r.`{name}`) AS `{name}`"
    return f"r.`{name}` AS `{name}`"


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
            name, _param_type(field), [_param(field, v, None, False) for v in value]
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


def _rows_parameter(rows: Sequence[MetricRow]):
    record_field = {
        "name": "rows",
        "type": "RECORD",
        "mode": "NULLABLE",
        "fields": _metric_fields(),
    }
    return _param(record_field, [warehouse_record(r) for r in rows], "rows", True)


def merge_metric_rows(client, dataset: str, rows: Sequence[MetricRow]) -> int:
    """MERGEs ``rows`` into ``metrics_minute`` (tables created if missing); returns keys merged."""
    from google.cloud.bigquery import query

    newest = latest_panes(rows)
    if not newest:
        return 0
    _ensure_objects(client, dataset)
    starts = [r.window_start for r in newest]
    _run(
        client,
        metrics_merge_sql(dataset),
        [
            _rows_parameter(newest),
            query.ScalarQueryParameter("min_window_start", "TIMESTAMP", min(starts)),
            query.ScalarQueryParameter("max_window_start", "TIMESTAMP", max(starts)),
        ],
    )
    return len(newest)


# --- audit: Storage Write API --------------------------------------------------------------


@cache
def _audit_encoder() -> RowEncoder:
    return RowEncoder(bigquery_schema("audit_record"), "AuditRecord")


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
    """MERGEs ``MetricRow`` panes into ``metrics_minute`` (see the module docstring): one writer
    (one shard), so MERGEs on the table never run concurrently."""

    step = "write_metrics_bigquery"
    id_field = "model"

    def _write(self, batch: Sequence[MetricRow]) -> None:
        merge_metric_rows(self._client, self._dataset, batch)


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
