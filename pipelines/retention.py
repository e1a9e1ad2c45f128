"""Retention: delete what the seed design keeps no longer, from the embedded stores or from
Cloud Storage and BigQuery.

    python -m pipelines.retention --output_root ./out [--dry_run] [--as_of 2026-12-01]
    python -m pipelines.retention --raw_root gs://P-genai-raw \\
        --dead_letter_root gs://P-genai-dead-letter --bigquery_dataset P.genai_analytics \\
        --dead_letter_table P.genai_restricted.dead_letters [--dry_run]

Deletes:
  * raw archive partitions ``raw/event_date=D/`` (every region) under ``--raw_root`` (default
    ``--output_root``; local or ``gs://``) with D older than ``--raw_retention_days`` (30):
    D < as_of - 30 days;
  * dead-letter partitions ``dead_letter/dt=D/`` (D: the UTC date of failure) under
    ``--dead_letter_root`` (default ``--raw_root``) older than ``--dead_letter_retention_days``
    (30), and, with ``--dead_letter_table``, that BigQuery table's rows that failed before the
    same cutoff;
  * ``metrics_minute`` rows whose window starts more than ``--minute_retention_days`` (30)
    before ``as_of`` (00:00 UTC), and the rollups (``metrics_rollup``), ``freshness_minute`` and
    ``usage_hourly`` rows dated more than ``--metrics_retention_days`` (365) before ``as_of``:
    in BigQuery with ``--bigquery_dataset``, else in ``warehouse.duckdb`` under
    ``--output_root``; the views, which read these, follow. In the embedded warehouse the
    hourly and daily rollups of the minute rows that go are recomputed from them first (so the
    rollups kept agree with what goes); in BigQuery every commit already recomputed them.
The audit log is kept (it holds ids, pseudonyms and outcomes, never text).

It prints every partition it deletes (path, files, records), the rows it deletes and the
totals; ``--dry_run`` prints the same and deletes nothing. Whole partitions go, by the date in
their path, so a late event archived under an old ``event_date`` goes with its day. The files
go through Beam's ``FileSystems``; BigQuery rows by a ``DELETE`` whose condition covers whole
partitions (BigQuery then drops partitions, scanning nothing). Idempotent: a second run finds
nothing to delete.

On Google Cloud the same retention is also infrastructure (``terraform/``): the buckets delete
objects 30 days after they were written (lifecycle rules, ``raw_retention_days``,
``dead_letter_retention_days``), ``metrics_minute`` drops hourly partitions after
``metrics_minute_retention_days`` (30), the rollups, ``freshness_minute`` and ``usage_hourly``
drop daily partitions after ``metrics_partition_expiration_days`` (365), and the dead-letter
table's after 30 days. A bucket rule counts from an object's creation; this command counts from
the partition's date, so it also removes a late event's object under an old ``event_date`` on
time, and it shows what retention removes before it does (``--dry_run``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from collections.abc import Sequence
from typing import NamedTuple

import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.io.sinks.embedded import WAREHOUSE_DB
from pipelines.io.sinks.embedded.warehouse import delete_before
from pipelines.io.sinks.gcp.bigquery import partition_column, split_dataset
from pipelines.io.sinks.gcp.dead_letter_table import split_table
from pipelines.io.sinks.warehouse_tables import FRESHNESS, METRICS, ROLLUPS, USAGE
from pipelines.launch import fail

__all__ = [
    "Partition",
    "RetentionResult",
    "apply_retention",
    "delete_bigquery_rows_before",
    "expired_partitions",
    "run",
]

RAW_RETENTION_DAYS = 30
DEAD_LETTER_RETENTION_DAYS = 30
METRICS_RETENTION_DAYS = 365  # the seed design's "aggregated metrics 1 year": rollups, usage
MINUTE_RETENTION_DAYS = 30  # minute rows: a lever ("sampling for long-term metrics")
# The seed design keeps raw prompts and responses 30 days at most; dead letters carry (redacted)
# payloads and get the same bound (as the Terraform variables do).
MAX_PAYLOAD_RETENTION_DAYS = 30

# Store -> (partition directory under the root, the glob of its files below that directory).
_LAYOUTS = {
    "raw": ("raw", "event_date", "region=*/"),
    "dead_letter": ("dead_letter", "dt", ""),
}
_DATE = re.compile(r"=(\d{4}-\d{2}-\d{2})$")


class Partition(NamedTuple):
    """One expired date partition: its directory, date, Avro files and their records."""

    path: str
    day: dt.date
    files: tuple[str, ...]
    records: int
    leftovers: tuple[str, ...]  # temporary files of interrupted writes, deleted with it


class RetentionResult(NamedTuple):
    raw: tuple[Partition, ...]
    dead_letters: tuple[Partition, ...]
    metric_rows: int  # metrics_minute rows
    aggregate_rows: dict[str, int] = {}  # rows of the rollups, freshness_minute, usage_hourly
    dead_letter_rows: int = 0  # rows of the BigQuery dead-letter table


def _records(path: str) -> int:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return sum(block.num_records for block in fastavro.block_reader(handle))


def _matched(pattern: str) -> list[str]:
    (result,) = FileSystems.match([pattern])
    return sorted(m.path for m in result.metadata_list)


def expired_partitions(root: str, store: str, cutoff: dt.date) -> list[Partition]:
    """The date partitions of ``store`` (``raw`` or ``dead_letter``) dated before ``cutoff``."""
    directory, key, below = _LAYOUTS[store]
    prefix = FileSystems.join(root, directory)
    by_partition: dict[str, tuple[list[str], list[str]]] = {}
    for kind, name in ((0, "*.avro"), (1, ".*.tmp-*")):
        for path in _matched(FileSystems.join(prefix, f"{key}=*", f"{below}{name}")):
            relative = path[len(prefix) :].lstrip("/")
            partition = FileSystems.join(prefix, relative.split("/", 1)[0])
            by_partition.setdefault(partition, ([], []))[kind].append(path)
    expired = []
    for partition, (files, leftovers) in sorted(by_partition.items()):
        match = _DATE.search(partition)
        if match is None:
            continue  # not a date partition: never touched
        day = dt.date.fromisoformat(match.group(1))
        if day < cutoff:
            records = sum(_records(f) for f in files)
            expired.append(Partition(partition, day, tuple(files), records, tuple(leftovers)))
    return expired


def _delete(partitions: Sequence[Partition]) -> None:
    for partition in partitions:
        paths = [*partition.files, *partition.leftovers]
        if paths:
            FileSystems.delete(paths)
        if FileSystems.get_scheme(partition.path) in (None, "file"):
            # Local directories stay behind once empty; remove them, deepest first.
            for directory, _, _ in sorted(os.walk(partition.path), reverse=True):
                if not os.listdir(directory):
                    os.rmdir(directory)


def delete_bigquery_rows_before(
    client, table: str, column: str, cutoff: dt.datetime, *, dry_run: bool = False
) -> int:
    """Deletes the rows of BigQuery ``table`` (``PROJECT.DATASET.TABLE``) whose ``column`` (its
    time-partitioning TIMESTAMP column) is before ``cutoff`` (a midnight UTC, so whole
    partitions). Returns the rows deleted, or with ``dry_run`` those that would be. A table
    that does not exist holds no rows."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    parameters = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("cutoff", "TIMESTAMP", cutoff)]
    )
    condition = f"`{column}` < @cutoff"
    try:
        ((count,),) = client.query(
            f"SELECT COUNT(*) FROM `{table}` WHERE {condition}", job_config=parameters
        ).result()
    except NotFound:
        return 0
    if count and not dry_run:
        client.query(f"DELETE FROM `{table}` WHERE {condition}", job_config=parameters).result()
    return count


def _report(title: str, partitions: Sequence[Partition], verb: str) -> list[str]:
    lines = [title]
    for p in partitions:
        extra = f", {len(p.leftovers)} temporary files" if p.leftovers else ""
        lines.append(f"  {verb} {p.path}  {len(p.files)} files, {p.records} records{extra}")
    files = sum(len(p.files) for p in partitions)
    records = sum(p.records for p in partitions)
    lines.append(f"  total: {len(partitions)} partitions, {files} files, {records} records")
    return lines


def apply_retention(
    output_root: str,
    *,
    as_of: dt.date,
    raw_retention_days: int = RAW_RETENTION_DAYS,
    dead_letter_retention_days: int = DEAD_LETTER_RETENTION_DAYS,
    metrics_retention_days: int = METRICS_RETENTION_DAYS,
    minute_retention_days: int = MINUTE_RETENTION_DAYS,
    dry_run: bool = False,
    raw_root: str | None = None,
    dead_letter_root: str | None = None,
    bigquery_dataset: str | None = None,
    dead_letter_table: str | None = None,
    client=None,
) -> RetentionResult:
    """Applies (or with ``dry_run`` only reports) the retention as of ``as_of``; prints it.

    The files are under ``raw_root`` and ``dead_letter_root`` (default ``output_root``); the
    metrics in BigQuery ``bigquery_dataset`` when given, else in ``output_root``'s warehouse;
    ``dead_letter_table`` rows go too when given. ``client``: the BigQuery client (default:
    one for the project of the dataset or table)."""
    raw_cutoff = as_of - dt.timedelta(days=raw_retention_days)
    dead_letter_cutoff = as_of - dt.timedelta(days=dead_letter_retention_days)
    metrics_cutoff = dt.datetime.combine(
        as_of - dt.timedelta(days=metrics_retention_days), dt.time(), tzinfo=dt.UTC
    )
    minute_cutoff = dt.datetime.combine(
        as_of - dt.timedelta(days=minute_retention_days), dt.time(), tzinfo=dt.UTC
    )
    raw_root = raw_root or output_root
    dead_letter_root = dead_letter_root or raw_root
    raw = expired_partitions(raw_root, "raw", raw_cutoff)
    dead_letters = expired_partitions(dead_letter_root, "dead_letter", dead_letter_cutoff)
    if not dry_run:
        _delete(raw)
        _delete(dead_letters)
    if bigquery_dataset or dead_letter_table:
        client = client or _bigquery_client(bigquery_dataset or dead_letter_table)
    if bigquery_dataset:
        store = f"BigQuery {bigquery_dataset}.{METRICS.name}"
        metric_rows, aggregate_rows = _delete_bigquery_metrics(
            client, bigquery_dataset, minute_cutoff, metrics_cutoff, dry_run=dry_run
        )
    else:
        warehouse = store = os.path.join(output_root, WAREHOUSE_DB)
        metric_rows = delete_before(warehouse, METRICS.name, minute_cutoff, dry_run=dry_run)
        aggregate_rows = {
            table.name: delete_before(warehouse, table.name, metrics_cutoff, dry_run=dry_run)
            for table in (ROLLUPS, FRESHNESS, USAGE)
        }
    dead_letter_rows = 0
    if dead_letter_table:
        dead_letter_rows = delete_bigquery_rows_before(
            client,
            dead_letter_table,
            "failed_at",
            dt.datetime.combine(dead_letter_cutoff, dt.time(), tzinfo=dt.UTC),
            dry_run=dry_run,
        )
    verb = "would delete" if dry_run else "deleted"
    roots = sorted({raw_root, dead_letter_root})
    lines = [
        f"retention as of {as_of.isoformat()} under {', '.join(roots)}"
        + (" (dry run: nothing is deleted)" if dry_run else ""),
        *_report(
            f"raw archive: event_date before {raw_cutoff} ({raw_retention_days} days)", raw, verb
        ),
        *_report(
            f"dead letters: dt before {dead_letter_cutoff} ({dead_letter_retention_days} days)",
            dead_letters,
            verb,
        ),
        f"metrics_minute: window_start before {minute_cutoff.isoformat()} "
        f"({minute_retention_days} days"
        + ("; their rollups recomputed first)" if not bigquery_dataset else ")"),
        f"  {verb} {metric_rows} rows from {store}",
        f"rollups, freshness_minute, usage_hourly: before {metrics_cutoff.isoformat()} "
        f"({metrics_retention_days} days)",
        *(
            f"  {verb} {n} rows from "
            + (f"BigQuery {bigquery_dataset}.{table}" if bigquery_dataset else table)
            for table, n in aggregate_rows.items()
        ),
    ]
    if dead_letter_table:
        lines += [
            f"dead-letter table: failed_at before {dead_letter_cutoff}",
            f"  {verb} {dead_letter_rows} rows from BigQuery {dead_letter_table}",
        ]
    print("\n".join(lines), flush=True)
    return RetentionResult(
        tuple(raw), tuple(dead_letters), metric_rows, aggregate_rows, dead_letter_rows
    )


def _delete_bigquery_metrics(
    client, dataset: str, minute_cutoff: dt.datetime, cutoff: dt.datetime, *, dry_run: bool
) -> tuple[int, dict[str, int]]:
    """The metric retention in BigQuery ``dataset``: minute rows before ``minute_cutoff``, the
    rollups, per-minute freshness and usage before ``cutoff``. Returns (minute rows, rows per
    other table)."""

    def delete(table, before: dt.datetime) -> int:
        return delete_bigquery_rows_before(
            client, f"{dataset}.{table.name}", partition_column(table), before, dry_run=dry_run
        )

    aggregate_rows = {table.name: delete(table, cutoff) for table in (ROLLUPS, FRESHNESS, USAGE)}
    return delete(METRICS, minute_cutoff), aggregate_rows


def _bigquery_client(reference: str):
    from pipelines.io.sinks.gcp.bigquery import bigquery_client

    return bigquery_client(reference.split(".", 1)[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output_root",
        default="./out",
        help="Root of the embedded outputs (warehouse.duckdb; and raw/, dead_letter/ unless "
        "--raw_root, --dead_letter_root say otherwise).",
    )
    parser.add_argument(
        "--raw_root",
        default="",
        help="Root of raw/ (local or gs://; default: --output_root).",
    )
    parser.add_argument(
        "--dead_letter_root",
        default="",
        help="Root of dead_letter/ (local or gs://; default: --raw_root).",
    )
    parser.add_argument(
        "--bigquery_dataset",
        default="",
        help="PROJECT.DATASET: apply the metrics retention to its metric tables instead of "
        "the embedded warehouse's.",
    )
    parser.add_argument(
        "--dead_letter_table",
        default="",
        help="PROJECT.DATASET.TABLE: also delete the dead-letter rows of that BigQuery table.",
    )
    parser.add_argument(
        "--as_of",
        help="The date retention is computed from, YYYY-MM-DD (default: today, UTC).",
    )
    parser.add_argument(
        "--raw_retention_days",
        type=int,
        default=RAW_RETENTION_DAYS,
        help="Raw archive partitions older than this many days are deleted (1 to 30).",
    )
    parser.add_argument(
        "--dead_letter_retention_days",
        type=int,
        default=DEAD_LETTER_RETENTION_DAYS,
        help="Dead-letter partitions older than this many days are deleted (1 to 30).",
    )
    parser.add_argument(
        "--metrics_retention_days",
        type=int,
        default=METRICS_RETENTION_DAYS,
        help="Rollups, per-minute freshness and hourly usage older than this many days are "
        "deleted (>= 1).",
    )
    parser.add_argument(
        "--minute_retention_days",
        type=int,
        default=MINUTE_RETENTION_DAYS,
        help="metrics_minute rows older than this many days are deleted, after their hourly "
        "and daily rollups are recomputed from them (1 to --metrics_retention_days).",
    )
    parser.add_argument(
        "--dry_run", action="store_true", help="Print what would be deleted; delete nothing."
    )
    return parser


def validate(args: argparse.Namespace) -> list[str]:
    problems = []
    for name in ("raw_retention_days", "dead_letter_retention_days"):
        if not 1 <= getattr(args, name) <= MAX_PAYLOAD_RETENTION_DAYS:
            problems.append(
                f"--{name} must be between 1 and {MAX_PAYLOAD_RETENTION_DAYS} (payloads are kept "
                f"at most {MAX_PAYLOAD_RETENTION_DAYS} days)"
            )
    if args.metrics_retention_days < 1:
        problems.append("--metrics_retention_days must be >= 1")
    if not 1 <= args.minute_retention_days <= max(args.metrics_retention_days, 1):
        problems.append(
            "--minute_retention_days must be between 1 and --metrics_retention_days (the "
            "rollups must outlive the minute rows they come from)"
        )
    if args.as_of is not None:
        try:
            dt.date.fromisoformat(args.as_of)
        except ValueError:
            problems.append("--as_of must be a date YYYY-MM-DD")
    if "://" in args.output_root and not args.bigquery_dataset:
        problems.append(
            "--output_root must be a local directory (the embedded warehouse), or give "
            "--bigquery_dataset"
        )
    if args.bigquery_dataset:
        try:
            split_dataset(args.bigquery_dataset)
        except ValueError:
            problems.append("--bigquery_dataset must be PROJECT.DATASET")
    if args.dead_letter_table:
        try:
            split_table(args.dead_letter_table)
        except ValueError:
            problems.append("--dead_letter_table must be PROJECT.DATASET.TABLE")
    return problems


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = validate(args)
    if problems:
        fail(problems)
    as_of = dt.date.fromisoformat(args.as_of) if args.as_of else dt.datetime.now(dt.UTC).date()
    apply_retention(
        args.output_root,
        as_of=as_of,
        raw_retention_days=args.raw_retention_days,
        dead_letter_retention_days=args.dead_letter_retention_days,
        metrics_retention_days=args.metrics_retention_days,
        minute_retention_days=args.minute_retention_days,
        dry_run=args.dry_run,
        raw_root=args.raw_root or None,
        dead_letter_root=args.dead_letter_root or None,
        bigquery_dataset=args.bigquery_dataset or None,
        dead_letter_table=args.dead_letter_table or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
