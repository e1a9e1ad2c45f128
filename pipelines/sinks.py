"""Sink selection, shared by every pipeline: the embedded default or Google Cloud (``--sink``).

``add_sink_options`` adds the flags, ``validate_sinks`` checks them before anything is built,
``dataflow_problems`` rejects what cannot run on Dataflow (local files and databases), and
``write_outputs`` applies the chosen sinks to the core's outputs under a stable step label
(``WriteEmbedded`` or ``WriteGcp``; Dataflow matches labels when a job is updated in place).
``PipelineOutputs`` is what each pipeline's ``build()`` returns.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import apache_beam as beam

from pipelines.io.sinks import SinkOutputs
from pipelines.io.sinks.batches import SinkRetry
from pipelines.io.sinks.embedded import WriteEmbedded
from pipelines.io.sinks.gcp import GcpConfig, WriteGcp
from pipelines.io.sinks.gcp.audit_db import describe_db_url, resolve_db_url
from pipelines.io.sinks.gcp.bigquery import split_dataset
from pipelines.io.sinks.gcp.dead_letter_table import split_table
from pipelines.io.sources.pubsub import is_topic_path
from pipelines.options import add_flag
from transforms.analyze import CoreOutputs

__all__ = [
    "SINKS",
    "PipelineOutputs",
    "add_sink_options",
    "dataflow_problems",
    "describe_sinks",
    "gcp_config",
    "output_lines",
    "validate_sinks",
    "write_outputs",
]

SINKS = ("embedded", "gcp")
_RETRY = SinkRetry()


class PipelineOutputs(NamedTuple):
    """What a pipeline's ``build()`` returns: ``read``, the input elements as read (events, or
    chunks of lines: what a run counts as read); ``core``, the core transform's outputs
    (``CoreOutputs``); ``sinks``, what the sinks returned (``SinkOutputs``)."""

    read: beam.PCollection
    core: CoreOutputs
    sinks: SinkOutputs


def add_sink_options(parser: argparse.ArgumentParser) -> None:
    """Adds the sink flags (no ``required=True``: ``validate_sinks`` checks them)."""
    add_flag(parser, "--sink", default="embedded", help=f"Where outputs go, one of {SINKS}.")
    add_flag(
        parser,
        "--raw_root",
        default="",
        help="gcp: root of the raw archive, e.g. gs://bucket/prefix (default: --output_root).",
    )
    add_flag(
        parser,
        "--dead_letter_root",
        default="",
        help="gcp: root of the dead-letter files, access-restricted (default: --raw_root).",
    )
    add_flag(
        parser,
        "--dead_letter_topic",
        default="",
        help="gcp: also publish dead letters to projects/P/topics/T (default: files only).",
    )
    add_flag(
        parser,
        "--dead_letter_table",
        default="",
        help="gcp: also append dead letters to this BigQuery table, PROJECT.DATASET.TABLE "
        "(default: none).",
    )
    add_flag(
        parser,
        "--bigquery_dataset",
        default="",
        help="gcp: PROJECT.DATASET holding metrics_minute, audit_log and the views.",
    )
    add_flag(
        parser,
        "--audit_db_url",
        default="env:GENAI_AUDIT_DB_URL",
        help="gcp: audit store: cloudsql://IAM_USER@PROJECT:REGION:INSTANCE/DATABASE (Cloud SQL "
        "connector, IAM auth), a postgresql:// URL without password, env:NAME or file:PATH.",
    )
    add_flag(
        parser,
        "--sink_max_attempts",
        type=int,
        default=_RETRY.max_attempts,
        help="gcp: attempts per write before its rows are dead-lettered.",
    )
    add_flag(
        parser,
        "--sink_first_backoff_s",
        type=float,
        default=_RETRY.first_backoff_s,
        help="gcp: first wait between attempts; it doubles (fuzzed).",
    )
    add_flag(
        parser,
        "--sink_max_backoff_s",
        type=float,
        default=_RETRY.max_backoff_s,
        help="gcp: longest wait between attempts.",
    )
    add_flag(
        parser,
        "--sink_flush_s",
        type=int,
        default=10,
        help="gcp: longest wait before buffered rows go to BigQuery, PostgreSQL or Pub/Sub.",
    )
    add_flag(
        parser,
        "--file_flush_s",
        type=int,
        default=60,
        help="gcp: longest wait before buffered records are written as an Avro object.",
    )


def _retry(options) -> SinkRetry:
    return SinkRetry(
        options.sink_max_attempts, options.sink_first_backoff_s, options.sink_max_backoff_s
    )


def gcp_config(options) -> GcpConfig:
    """The ``GcpConfig`` of parsed options."""
    raw_root = options.raw_root or options.output_root
    return GcpConfig(
        raw_root=raw_root,
        dead_letter_root=options.dead_letter_root or raw_root,
        bigquery_dataset=options.bigquery_dataset,
        audit_db_url=options.audit_db_url,
        dead_letter_topic=options.dead_letter_topic or None,
        dead_letter_table=options.dead_letter_table or None,
        retry=_retry(options),
        flush_s=options.sink_flush_s,
        file_flush_s=options.file_flush_s,
    )


def validate_sinks(options) -> list[str]:
    """Problems with the sink flags (empty when fine). The audit URL must resolve here."""
    if options.sink not in SINKS:
        return [f"--sink must be one of {SINKS}, got {options.sink!r}"]
    if options.sink != "gcp":
        return []
    problems = [f"--sink_{p}" for p in _retry(options).problems()]
    if options.sink_flush_s < 1 or options.file_flush_s < 1:
        problems.append("--sink_flush_s and --file_flush_s must be >= 1 (whole seconds)")
    try:
        split_dataset(options.bigquery_dataset)
    except ValueError:
        problems.append("--bigquery_dataset must be PROJECT.DATASET (required with --sink gcp)")
    try:
        resolve_db_url(options.audit_db_url)
    except (ValueError, OSError) as error:
        problems.append(str(error))
    if options.dead_letter_topic and not is_topic_path(options.dead_letter_topic):
        problems.append("--dead_letter_topic must be projects/PROJECT/topics/TOPIC")
    if options.dead_letter_table:
        try:
            split_table(options.dead_letter_table)
        except ValueError:
            problems.append("--dead_letter_table must be PROJECT.DATASET.TABLE")
    return problems


def _roots(options) -> dict[str, str]:
    if options.sink != "gcp":
        return {"--output_root": options.output_root}
    c = gcp_config(options)
    return {"--raw_root": c.raw_root, "--dead_letter_root": c.dead_letter_root}


def dataflow_problems(options) -> list[str]:
    """What cannot run on Dataflow: the embedded sinks (local files and databases on one
    machine), and output roots that are not ``gs://``. Checked at launch, before anything
    contacts Google Cloud."""
    problems = []
    if options.sink != "gcp":
        problems.append("--sink is required on Dataflow: gcp (embedded writes local files)")
    for flag, root in _roots(options).items():
        if not (root or "").startswith("gs://"):
            problems.append(f"{flag} must be a gs:// path on Dataflow, not a local directory")
    return problems


def describe_sinks(options) -> str:
    """The sink settings for the start-up log line (never a secret)."""
    if options.sink != "gcp":
        return f"sink=embedded output_root={options.output_root}"
    c = gcp_config(options)
    return (
        f"sink=gcp raw_root={c.raw_root} dead_letter_root={c.dead_letter_root} "
        f"bigquery_dataset={c.bigquery_dataset} audit_db={describe_db_url(c.audit_db_url)} "
        f"dead_letter_topic={c.dead_letter_topic or '-'} "
        f"dead_letter_table={c.dead_letter_table or '-'}"
    )


def output_lines(options) -> list[str] | None:
    """Where the outputs are, for the run summary (None: the embedded layout)."""
    if options.sink != "gcp":
        return None
    c = gcp_config(options)
    lines = [
        f"raw archive      {c.raw_root.rstrip('/')}/raw/event_date=*/region=*/",
        f"dead letters     {c.dead_letter_root.rstrip('/')}/dead_letter/dt=*/",
        f"metrics          BigQuery {c.bigquery_dataset}.metrics_minute (+ daily views)",
        f"audit log        PostgreSQL {describe_db_url(c.audit_db_url)} and BigQuery "
        f"{c.bigquery_dataset}.audit_log",
    ]
    if c.dead_letter_topic:
        lines.append(f"dead-letter topic {c.dead_letter_topic}")
    if c.dead_letter_table:
        lines.append(f"dead-letter table BigQuery {c.dead_letter_table}")
    return lines


def write_outputs(
    core: CoreOutputs, options, *, archive: bool = True, metrics: bool = True
) -> SinkOutputs:
    """Applies the chosen sinks to the core's outputs; returns what they return."""
    if options.sink == "gcp":
        return core | "WriteGcp" >> WriteGcp(gcp_config(options), archive=archive, metrics=metrics)
    return core | "WriteEmbedded" >> WriteEmbedded(
        options.output_root, archive=archive, metrics=metrics
    )
