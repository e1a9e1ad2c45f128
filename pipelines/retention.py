"""Retention of the embedded stores: delete what the seed design keeps no longer.

    python -m pipelines.retention --output_root ./out [--dry_run] [--as_of 2026-12-01]

Deletes, under ``--output_root``:
  * raw archive partitions ``raw/event_date=D/`` (every region) with D older than
    ``--raw_retention_days`` (30): D < as_of - 30 days;
  * dead-letter partitions ``dead_letter/dt=D/`` (D: the UTC date of failure) older than
    ``--dead_letter_retention_days`` (30);
  * ``metrics_minute`` rows of ``warehouse.duckdb`` whose window starts more than
    ``--minute_retention_days`` (30) before ``as_of`` (00:00 UTC), after recomputing the hourly
    and daily rollups of their periods from them (so the rollups kept agree with what goes);
  * the rollups (``metrics_rollup``), ``freshness_minute`` and ``usage_hourly`` rows dated more
    than ``--metrics_retention_days`` (365) before ``as_of``; the views, which read these, follow.
The audit log is kept (it holds ids, pseudonyms and outcomes, never text).

It prints every partition it deletes (path, files, records) and the totals; ``--dry_run``
prints the same and deletes nothing. Whole partitions go, by the date in their path, so a late
event archived under an old ``event_date`` goes with its day. The files go through Beam's
``FileSystems`` (a ``gs://`` archive works too); the database is a local file. Idempotent:
a second run finds nothing to delete.

On Google Cloud the same retention is infrastructure, not this command (``terraform/``): the
raw and dead-letter buckets delete objects 30 days after they were written (lifecycle rules,
``raw_retention_days``, ``dead_letter_retention_days``), ``metrics_minute`` drops hourly
partitions after ``metrics_minute_retention_days`` (30) and the rollups, ``freshness_minute``
and ``usage_hourly`` drop daily partitions after ``metrics_partition_expiration_days`` (365).
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
from pipelines.io.sinks.warehouse_tables import FRESHNESS, METRICS, ROLLUPS, USAGE
from pipelines.launch import fail

__all__ = ["Partition", "RetentionResult", "apply_retention", "expired_partitions", "run"]

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
) -> RetentionResult:
    """Applies (or with ``dry_run`` only reports) the retention as of ``as_of``; prints it."""
    raw_cutoff = as_of - dt.timedelta(days=raw_retention_days)
    dead_letter_cutoff = as_of - dt.timedelta(days=dead_letter_retention_days)
    metrics_cutoff = dt.datetime.combine(
        as_of - dt.timedelta(days=metrics_retention_days), dt.time(), tzinfo=dt.UTC
    )
    minute_cutoff = dt.datetime.combine(
        as_of - dt.timedelta(days=minute_retention_days), dt.time(), tzinfo=dt.UTC
    )
    raw = expired_partitions(output_root, "raw", raw_cutoff)
    dead_letters = expired_partitions(output_root, "dead_letter", dead_letter_cutoff)
    if not dry_run:
        _delete(raw)
        _delete(dead_letters)
    warehouse = os.path.join(output_root, WAREHOUSE_DB)
    metric_rows = delete_before(warehouse, METRICS.name, minute_cutoff, dry_run=dry_run)
    aggregate_rows = {
        table.name: delete_before(warehouse, table.name, metrics_cutoff, dry_run=dry_run)
        for table in (ROLLUPS, FRESHNESS, USAGE)
    }
    verb = "would delete" if dry_run else "deleted"
    lines = [
        f"retention as of {as_of.isoformat()} under {output_root}"
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
        f"({minute_retention_days} days; their rollups recomputed first)",
        f"  {verb} {metric_rows} rows from {warehouse}",
        f"rollups, freshness_minute, usage_hourly: before {metrics_cutoff.isoformat()} "
        f"({metrics_retention_days} days)",
        *(f"  {verb} {n} rows from {table}" for table, n in aggregate_rows.items()),
    ]
    print("\n".join(lines), flush=True)
    return RetentionResult(tuple(raw), tuple(dead_letters), metric_rows, aggregate_rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_root", default="./out", help="Root of the embedded outputs.")
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
    if "://" in args.output_root:
        problems.append("--output_root must be a local directory (the embedded warehouse)")
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
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
