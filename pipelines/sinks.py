"""Sink selection, shared by every pipeline: the embedded default or Google Cloud (``--sink``).

``add_sink_options`` adds the flags, ``validate_sinks`` checks them before anything is built,
``dataflow_problems`` rejects what cannot run on Dataflow (local files and databases),
``environment_problems`` checks at launch what the flags point at (output roots that cannot be
written, missing Google Cloud credentials), and
``write_outputs`` applies the chosen sinks to the core's outputs under a stable step label
(``WriteEmbedded`` or ``WriteGcp``; Dataflow matches labels when a job is updated in place).
``PipelineOutputs`` is what each pipeline's ``build()`` returns.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.io.sinks import SinkOutputs
from pipelines.io.sinks.batches import SinkRetry
from pipelines.io.sinks.embedded import AUDIT_DB, WAREHOUSE_DB, WriteEmbedded
from pipelines.io.sinks.gcp import GcpConfig, WriteGcp
from pipelines.io.sinks.gcp.bigquery import split_dataset
from pipelines.io.sinks.gcp.postgres import describe_db_url, resolve_db_url
from pipelines.io.sources.pubsub import is_topic_path
from pipelines.options import add_flag
from transforms.analyze import CoreOutputs

__all__ = [
    "SINKS",
    "PipelineOutputs",
    "add_sink_options",
    "dataflow_problems",
    "describe_sinks",
    "environment_problems",
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
        "--bigquery_dataset",
        default="",
        help="gcp: PROJECT.DATASET holding metrics_minute, audit_log and the views.",
    )
    add_flag(
        parser,
        "--audit_db_url",
        default="env:GENAI_AUDIT_DB_URL",
        help="gcp: PostgreSQL audit store: env:NAME, file:PATH or a postgresql:// URL "
        "without password.",
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
        help="Streaming: longest wait before buffered records are written as an Avro file "
        "(embedded) or object (gcp).",
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
        retry=_retry(options),
        flush_s=options.sink_flush_s,
        file_flush_s=options.file_flush_s,
    )


def validate_sinks(options) -> list[str]:
    """Problems with the sink flags (empty when fine). The audit URL must resolve here."""
    if options.sink not in SINKS:
        return [f"--sink must be one of {SINKS}, got {options.sink!r}"]
    if options.file_flush_s < 1:
        return ["--file_flush_s must be >= 1 (whole seconds)"]
    if options.sink != "gcp":
        return []
    problems = [f"--sink_{p}" for p in _retry(options).problems()]
    if options.sink_flush_s < 1:
        problems.append("--sink_flush_s must be >= 1 (whole seconds)")
    try:
        split_dataset(options.bigquery_dataset)
    except ValueError:
        problems.append("--bigquery_dataset must be PROJECT.DATASET (required with --sink gcp)")
    try:
        resolve_db_url(options.audit_db_url)
    except OSError as error:
        problems.append(
            f"--audit_db_url {options.audit_db_url}: cannot be read "
            f"({error.strerror or type(error).__name__})"
        )
    except UnicodeDecodeError:
        problems.append(f"--audit_db_url {options.audit_db_url}: the file is not UTF-8 text")
    except ValueError as error:
        problems.append(str(error))
    if options.dead_letter_topic and not is_topic_path(options.dead_letter_topic):
        problems.append("--dead_letter_topic must be projects/PROJECT/topics/TOPIC")
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


# What an embedded output root holds: directories and database files (pipelines.io.sinks).
_EMBEDDED_DIRECTORIES = ("raw", "dead_letter", "runs")
_EMBEDDED_FILES = (WAREHOUSE_DB, AUDIT_DB)


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def _writable_directory_problem(flag: str, path: str) -> str | None:
    """Why the local directory ``path`` (``flag``'s) cannot be written, or None. A missing
    directory is fine when its nearest existing ancestor is a directory that can be written
    (the run creates it); writability is probed with a temporary file, so read-only mounts
    and access lists count too."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        shown = path if existing == os.path.abspath(path) else f"{path} (at {existing})"
        return f"{flag} {shown} is a file, not a directory"
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
    except OSError as error:
        shown = path if existing == os.path.abspath(path) else f"{path} (at {existing})"
        return f"{flag} {shown} cannot be written ({error.strerror or type(error).__name__})"
    os.close(handle)
    os.unlink(probe)
    return None


def _embedded_root_problems(root: str) -> list[str]:
    """What keeps the embedded outputs under ``root`` from being written."""
    problem = _writable_directory_problem("--output_root", root)
    if problem:
        return [problem]
    problems = []
    for name in _EMBEDDED_DIRECTORIES:
        path = os.path.join(root, name)
        if os.path.lexists(path):
            problems.append(_writable_directory_problem("--output_root", path))
    for name in _EMBEDDED_FILES:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            problems.append(f"--output_root {path} is a directory, not a database file")
        elif os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            problems.append(f"--output_root {path} cannot be written")
    return [p for p in problems if p]


def _credentials_problem() -> str | None:
    """Whether Application Default Credentials are found (no network call when
    ``GOOGLE_APPLICATION_CREDENTIALS`` names a file)."""
    import google.auth
    from google.auth import exceptions as auth_exceptions

    try:
        google.auth.default()
    except (auth_exceptions.DefaultCredentialsError, ValueError) as error:
        detail = " ".join(str(error).split())
        return (
            "--sink gcp needs Google Cloud credentials (Application Default Credentials: "
            f"`gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS): {detail}"
        )
    return None


def environment_problems(options) -> list[str]:
    """What the flags point at that cannot work, checked at launch before anything is read:
    a local output root that cannot be written (a read-only directory, a file where a
    directory is expected, a database path that is a directory), and with ``--sink gcp``
    missing Google Cloud credentials. Empty when fine."""
    problems: list[str] = []
    if options.sink != "gcp":
        if _is_local(options.output_root):
            problems += _embedded_root_problems(options.output_root)
        return problems
    c = gcp_config(options)
    roots = {"--output_root": options.output_root, "--raw_root": c.raw_root}
    roots["--dead_letter_root"] = c.dead_letter_root
    seen = set()
    for flag, root in roots.items():
        if root and _is_local(root) and os.path.abspath(root) not in seen:
            seen.add(os.path.abspath(root))
            problem = _writable_directory_problem(flag, root)
            if problem:
                problems.append(problem)
    credentials = _credentials_problem()
    if credentials:
        problems.append(credentials)
    return problems


def describe_sinks(options) -> str:
    """The sink settings for the start-up log line (never a secret)."""
    if options.sink != "gcp":
        return f"sink=embedded output_root={options.output_root}"
    c = gcp_config(options)
    return (
        f"sink=gcp raw_root={c.raw_root} dead_letter_root={c.dead_letter_root} "
        f"bigquery_dataset={c.bigquery_dataset} audit_db={describe_db_url(c.audit_db_url)} "
        f"dead_letter_topic={c.dead_letter_topic or '-'}"
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
    return lines


def write_outputs(
    core: CoreOutputs, options, *, archive: bool = True, metrics: bool = True
) -> SinkOutputs:
    """Applies the chosen sinks to the core's outputs; returns what they return."""
    if options.sink == "gcp":
        return core | "WriteGcp" >> WriteGcp(gcp_config(options), archive=archive, metrics=metrics)
    return core | "WriteEmbedded" >> WriteEmbedded(
        options.output_root, archive=archive, metrics=metrics, file_flush_s=options.file_flush_s
    )
