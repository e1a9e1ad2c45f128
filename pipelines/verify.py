"""Verify that the metrics are a function of the archive: ``python -m pipelines.verify``.

Recomputes ``metrics_minute`` from the raw archive, the same way a reconciliation does
(``AnalyzeEvents`` on the archived events: deduplicated by the archive's rule, first archived
wins, then aggregated), and compares it with the stored rows field by field: counts and token
sums exactly, the latency sketch by its bins, distinct users by the content of the HLL sketch
(its coupons or registers, not its bytes or estimate, which depend on merge order), the
per-flag, per-class and per-info-type counts, the window end and the newest event time; the
estimated cost when the row was priced with the same price table (``--price_table``). It also
checks the audit log against the archive: every archived input has one record, ``written``,
and every ``written`` record of the range names an archived input. It prints every
difference and exits 1 when there is any, 0 when the stores agree.

    python -m pipelines.verify --output_root ./out
    python -m pipelines.verify --output_root ./out --start_date 2026-11-01 \\
        --end_date 2026-11-07 --regions us,eu
    python -m pipelines.verify --sink gcp --raw_root gs://B/archive \\
        --bigquery_dataset P.genai --audit_db_url env:GENAI_AUDIT_DB_URL

Range: the (event_date, region) partitions the archive holds, within ``--start_date`` ..
``--end_date`` and ``--regions`` when given (metrics are kept a year, the archive 30 days: rows
of days the archive no longer holds are not compared). Stores: the embedded ones under
``--output_root`` (``warehouse.duckdb``, ``audit.sqlite``), or with ``--sink gcp`` the archive
under ``--raw_root``, BigQuery ``metrics_minute`` and the PostgreSQL audit log
(``--audit_db_url``, the exact store; ``--skip_audit`` leaves the audit out).

What a clean result needs, and what breaks it (``docs/reliability.md``):
  * after backfills, reconciliations and dead-letter replays (each recomputes the partitions it
    touched): nothing; verify is clean;
  * after a streaming run: events archived beyond ``--allowed_lateness_s`` are in no
    streaming pane, a copy arriving after ``--dedupe_ttl_s`` is counted twice, and a crash or
    a cancelled run loses the panes still in flight. Those windows differ until the
    reconciliation of their dates (``python -m pipelines.backfill --input_format avro``).

A command of local runs (like the dead-letter replay): it reads the archive on this machine,
local or ``gs://``. Its cost is a read of the partitions in range and of their audit records.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import re
import sys
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.io.sinks.embedded import AUDIT_DB, WAREHOUSE_DB
from pipelines.io.sinks.warehouse_tables import METRICS, table_record
from pipelines.io.sources.archive import ReadArchivedEvents
from pipelines.launch import configure_logging, fail, on_dataflow, parse_options
from pipelines.local.runner import LocalRunner
from pipelines.options import add_date_range_options, add_flag, parse_date
from pipelines.sinks import add_sink_options, gcp_config, validate_sinks
from transforms import sketches
from transforms.analyze import AnalyzeEvents, CoreConfig
from transforms.audit import WRITTEN
from transforms.elements import MetricRow, RedactedEvent
from transforms.pricing.table import load_price_table

__all__ = [
    "Difference",
    "VerifyOptions",
    "archive_partitions",
    "audit_differences",
    "metric_differences",
    "run",
    "validate",
]

_LOGGER = logging.getLogger(__name__)
_DEFAULTS = CoreConfig()
_MAX_PRINTED = 100
_PARTITION = re.compile(r"/raw/event_date=([^/]+)/region=([^/]+)/[^/]+\.avro$")

# Compared exactly, when the stored row has a value (None: a row from before the field).
_EXACT = (
    "window_end",
    "request_count",
    "token_sum",
    "prompt_token_sum",
    "completion_token_sum",
    "unsplit_token_sum",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_sketch_relative_accuracy",
    "latest_event_time",
)
_MAPS = {
    "latency_sketch_bins": ("index", "count"),
    "policy_flag_counts": ("key", "value"),
    "data_class_counts": ("key", "value"),
    "redaction_counts": ("key", "value"),
}


class VerifyOptions(PipelineOptions):
    """Flags of ``verify`` (the backfill's where they mean the same)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(parser, "--output_root", default="./out", help="Root of the embedded outputs.")
        add_sink_options(parser)
        add_date_range_options(parser)
        add_flag(parser, "--regions", help="Comma-separated regions (default: all).")
        add_flag(
            parser,
            "--window_size_s",
            type=int,
            default=_DEFAULTS.window_size_s,
            help="Metrics window size (the pipelines' setting).",
        )
        add_flag(
            parser,
            "--dedupe_shards",
            type=int,
            default=_DEFAULTS.dedupe_shards,
            help="Number of dedupe state keys (batch grouping).",
        )
        add_flag(
            parser,
            "--price_table",
            default=_DEFAULTS.price_table,
            help="verify: the price table rows priced with the same version are checked "
            "against (builtin:NAME, a path or gs://).",
        )
        add_flag(
            parser,
            "--skip_audit",
            action="store_true",
            default=False,
            help="verify: compare the metrics only, not the audit log.",
        )


def validate(options: VerifyOptions) -> list[str]:
    problems = validate_sinks(options)
    start = parse_date(options.start_date, "start_date", problems)
    end = parse_date(options.end_date, "end_date", problems)
    if bool(start) != bool(end):
        problems.append("--start_date and --end_date go together")
    if start and end and end < start:
        problems.append("--end_date is before --start_date")
    if options.window_size_s <= 0 or 86_400 % options.window_size_s:
        problems.append("--window_size_s must divide a day (86400 s): days are verified whole")
    if options.dedupe_shards <= 0:
        problems.append("--dedupe_shards must be > 0")
    try:
        load_price_table(options.price_table)
    except ValueError as error:
        problems.append(f"--price_table: {error}")
    return problems


def _archive_root(options) -> str:
    return gcp_config(options).raw_root if options.sink == "gcp" else options.output_root


def archive_partitions(
    root: str, start: dt.date | None, end: dt.date | None, regions: list[str] | None
) -> list[tuple[str, str]]:
    """The (event_date, region) partitions the archive under ``root`` holds files in, within
    the dates (both None: all) and regions (None: all)."""
    pattern = FileSystems.join(root, "raw", "event_date=*", "region=*", "*.avro")
    (result,) = FileSystems.match([pattern])
    found = set()
    for metadata in result.metadata_list:
        match = _PARTITION.search(metadata.path.replace("\\", "/"))
        if match is None:
            continue
        day, region = match.group(1), urllib.parse.unquote(match.group(2))
        if start is not None and not start <= dt.date.fromisoformat(day) <= end:
            continue
        if regions is None or region in regions:
            found.add((day, region))
    return sorted(found)


# --- the comparison, as plain functions -----------------------------------------------------


class Difference(NamedTuple):
    """One window (or input) where the stores disagree."""

    key: str  # "<window_start> <model> <region>", or "input <input_id>"
    what: str  # e.g. "request_count: stored 50, archive 150"


def _as_utc(value: Any) -> Any:
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value


def _normalized(row: Mapping[str, Any]) -> dict[str, Any]:
    """A metric row (warehouse layout: maps as key/value lists) in comparable form."""
    out = {name: _as_utc(row.get(name)) for name in _EXACT}
    for name, (key, value) in _MAPS.items():
        entries = row.get(name) or []
        out[name] = {entry[key]: entry[value] for entry in entries}
    hll = row.get("users_hll")
    out["users"] = sketches.users_content(bytes(hll)) if hll else None
    out["estimated_cost_usd"] = row.get("estimated_cost_usd")
    out["price_table_version"] = row.get("price_table_version")
    return out


def _key(row: Mapping[str, Any]) -> tuple[dt.datetime, str, str]:
    return _as_utc(row["window_start"]), row["model"], row["region"]


def _describe(key: tuple[dt.datetime, str, str]) -> str:
    start, model, region = key
    return f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')} {model} {region}"


def metric_differences(
    recomputed: Iterable[MetricRow], stored: Iterable[Mapping[str, Any]]
) -> list[Difference]:
    """Every difference between the rows recomputed from the archive and the stored rows
    (``metrics_minute`` rows as dicts in the warehouse layout), by window and key."""
    archive = {_key(r._asdict()): _normalized(table_record(METRICS, r)) for r in recomputed}
    table = {_key(r): _normalized(r) for r in stored}
    differences = []
    for key in sorted(archive.keys() | table.keys()):
        name = _describe(key)
        if key not in table:
            count = archive[key]["request_count"]
            differences.append(Difference(name, f"no row (the archive holds {count} events)"))
            continue
        if key not in archive:
            count = table[key]["request_count"]
            differences.append(Difference(name, f"a row of {count} events the archive lacks"))
            continue
        ours, theirs = archive[key], table[key]
        for field in (*_EXACT, *_MAPS, "users"):
            if theirs[field] is not None and theirs[field] != ours[field]:
                differences.append(Difference(name, _what(field, theirs[field], ours[field])))
        same_prices = theirs["price_table_version"] == ours["price_table_version"]
        if same_prices and theirs["estimated_cost_usd"] != ours["estimated_cost_usd"]:
            what = _what(
                "estimated_cost_usd", theirs["estimated_cost_usd"], ours["estimated_cost_usd"]
            )
            differences.append(Difference(name, what))
    return differences


def _what(field: str, stored: Any, archive: Any) -> str:
    if field == "users":
        return "distinct users: the HLL sketches hold different users"
    return f"{field}: stored {stored!r}, archive {archive!r}"


def audit_differences(
    archived: Iterable[tuple[str | None, str, str]],
    records: Mapping[str, str],
    written_in_range: Iterable[str],
) -> list[Difference]:
    """Every disagreement between the archive and the audit log: an archived input (id,
    event_date, region) without a record, or whose record is not ``written``; a ``written``
    record of the range whose input the archive lacks. ``records``: input_id -> outcome of the
    archived inputs' records; ``written_in_range``: the input ids of the range's ``written``
    records. Inputs without an identity (archived before identities existed) are not checked.
    """
    archived_ids = {input_id for input_id, _, _ in archived if input_id}
    differences = []
    for input_id in sorted(archived_ids):
        outcome = records.get(input_id)
        if outcome is None:
            differences.append(Difference(f"input {input_id}", "archived, no audit record"))
        elif outcome != WRITTEN:
            differences.append(
                Difference(f"input {input_id}", f"archived, but its audit record says {outcome}")
            )
    for input_id in sorted(set(written_in_range) - archived_ids):
        differences.append(Difference(f"input {input_id}", "audited written, not archived"))
    return differences


# --- reading the stores ---------------------------------------------------------------------


class _SpillFn(beam.DoFn):
    """Writes each bundle's elements to one pickle file under ``directory``: how a local
    command collects a pipeline's results, whatever the number of worker processes."""

    def __init__(self, directory: str):
        self._directory = directory

    def start_bundle(self):
        self._items: list = []

    def process(self, element):
        self._items.append(element)

    def finish_bundle(self):
        if self._items:
            path = os.path.join(self._directory, f"{uuid.uuid4().hex}.pickle")
            with open(path, "wb") as handle:
                pickle.dump(self._items, handle)
        self._items = []


def _spilled(directory: str) -> list:
    items = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as handle:
            items += pickle.load(handle)
    return items


def _input_of(event: RedactedEvent) -> tuple[str | None, str, str]:
    return event.input_id, event.event_date.isoformat(), event.region


def _recompute(options, partitions, workdir: str) -> tuple[list[MetricRow], list]:
    view = options.view_as(VerifyOptions)
    config = CoreConfig(
        window_size_s=view.window_size_s,
        dedupe_shards=view.dedupe_shards,
        price_table=view.price_table,
    )
    metrics_dir, inputs_dir = (os.path.join(workdir, name) for name in ("metrics", "inputs"))
    os.makedirs(metrics_dir)
    os.makedirs(inputs_dir)
    named = options.view_as(StandardOptions).runner
    with beam.Pipeline(runner=None if named else LocalRunner(), options=options) as pipeline:
        events = (
            pipeline
            | "Partitions" >> beam.Create(partitions)
            | "ReadArchive" >> ReadArchivedEvents(_archive_root(view))
        )
        core = events | "AnalyzeArchive" >> AnalyzeEvents(config, input_format="redacted")
        _ = core.metrics | "SpillMetrics" >> beam.ParDo(_SpillFn(metrics_dir))
        _ = (
            events
            | "Inputs" >> beam.Map(_input_of)
            | "SpillInputs" >> beam.ParDo(_SpillFn(inputs_dir))
        )
    return _spilled(metrics_dir), _spilled(inputs_dir)


def _day_bounds(partitions) -> tuple[dt.datetime, dt.datetime]:
    days = sorted({dt.date.fromisoformat(day) for day, _ in partitions})
    start = dt.datetime.combine(days[0], dt.time(), dt.UTC)
    return start, dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)


def _stored_metrics(options, partitions) -> list[dict[str, Any]]:
    """The stored rows of the partitions' days, then of their (day, region) pairs."""
    start, end = _day_bounds(partitions)
    if options.sink == "gcp":
        rows = _bigquery_metrics(options.bigquery_dataset, start, end)
    else:
        rows = _duckdb_metrics(os.path.join(options.output_root, WAREHOUSE_DB), start, end)
    wanted = set(partitions)
    return [
        r for r in rows if (_as_utc(r["window_start"]).date().isoformat(), r["region"]) in wanted
    ]


def _duckdb_metrics(path: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    import duckdb

    if not os.path.exists(path):
        return []
    with duckdb.connect(path, read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        cursor = con.execute(
            "SELECT * FROM metrics_minute WHERE window_start >= ? AND window_start < ?",
            [start, end],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _bigquery_metrics(dataset: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    from google.cloud import bigquery

    from pipelines.io.sinks.gcp.bigquery import bigquery_client, split_dataset

    client = bigquery_client(split_dataset(dataset)[0])
    job = client.query(
        f"SELECT * FROM `{dataset}.metrics_minute` "
        "WHERE window_start >= @start AND window_start < @end",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
                bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
            ]
        ),
    )
    return [dict(row.items()) for row in job.result()]


def _audit_rows(options) -> list[tuple]:
    """(input_id, outcome, event_time, region) of every audit record with an input id."""
    query = "SELECT input_id, outcome, event_time, region FROM audit_log WHERE input_id IS NOT NULL"
    if options.sink == "gcp":
        import psycopg

        from pipelines.io.sinks.gcp.postgres import resolve_db_url

        with psycopg.connect(resolve_db_url(options.audit_db_url)) as conn:
            return [(i, o, _as_utc(t), r) for i, o, t, r in conn.execute(query).fetchall()]
    import sqlite3

    path = os.path.join(options.output_root, AUDIT_DB)
    if not os.path.exists(path):
        return []
    with sqlite3.connect(path) as con:
        rows = con.execute(query).fetchall()
    return [
        (i, o, None if t is None else dt.datetime.fromisoformat(t.replace("Z", "+00:00")), r)
        for i, o, t, r in rows
    ]


def _audit_check(options, partitions, archived) -> list[Difference]:
    rows = _audit_rows(options)
    records = {input_id: outcome for input_id, outcome, _, _ in rows}
    wanted = set(partitions)
    written_in_range = [
        input_id
        for input_id, outcome, event_time, region in rows
        if outcome == WRITTEN
        and event_time is not None
        and (event_time.date().isoformat(), region) in wanted
    ]
    return audit_differences(archived, records, written_in_range)


def _print(title: str, differences: list[Difference]) -> None:
    print(f"{title}: {len(differences)} difference(s)")
    for difference in differences[:_MAX_PRINTED]:
        print(f"    {difference.key}: {difference.what}")
    if len(differences) > _MAX_PRINTED:
        print(f"    ... and {len(differences) - _MAX_PRINTED} more")


def run(argv: list[str] | None = None) -> int:
    options = parse_options(argv, VerifyOptions, "python -m pipelines.verify", __doc__)
    view = options.view_as(VerifyOptions)
    if on_dataflow(options):
        fail(["verify runs on local runners (it reads the archive and the stores from here)"])
    problems = validate(view)
    if problems:
        fail(problems)
    regions = [r.strip() for r in view.regions.split(",")] if view.regions else None
    start = parse_date(view.start_date, "start_date", [])
    end = parse_date(view.end_date, "end_date", [])
    root = _archive_root(view)
    partitions = archive_partitions(root, start, end, regions)
    if not partitions:
        print(f"verify: the archive under {root} holds no partition in the range: nothing to do")
        return 0
    _LOGGER.info("verify: %d partitions under %s", len(partitions), root)
    with tempfile.TemporaryDirectory(prefix="verify-") as workdir:
        recomputed, archived = _recompute(options, partitions, workdir)
    metrics = metric_differences(recomputed, _stored_metrics(view, partitions))
    audit = [] if view.skip_audit else _audit_check(view, partitions, archived)
    days = sorted({day for day, _ in partitions})
    print(
        f"\n=== verify: {len(partitions)} partitions, {days[0]}..{days[-1]}, "
        f"{len(archived)} archived events, {len(recomputed)} windows ==="
    )
    _print("metrics_minute against the archive", metrics)
    if not view.skip_audit:
        _print("audit log against the archive", audit)
    clean = not metrics and not audit
    print("verify: OK" if clean else "verify: DIFFERENCES", flush=True)
    return 0 if clean else 1


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
