"""The Google Cloud sinks (``--sink gcp``), applied by both pipelines to the core's outputs.

The same outputs as the embedded default (``pipelines.io.sinks.embedded``), written to the
production services; only the sink classes differ, every transform before them is shared:

* ``events`` -> the raw archive, Avro, ``<raw_root>/raw/event_date=.../region=.../`` on Cloud
  Storage, through the same writer as the embedded default (``WriteRawEvents``);
* ``metrics`` -> BigQuery ``metrics_minute`` by MERGE, one row per key, with its rollups and
  per-minute freshness (``MetricsMergeSink``); ``usage`` -> ``usage_hourly`` (``UsageMergeSink``);
* ``audit`` -> PostgreSQL ``audit_log`` (``AuditInsertSink``, Cloud SQL through the connector)
  and BigQuery ``audit_log`` (``AuditAppendSink``, Storage Write API): dual-written, each with
  its own retries;
* ``dead_letters`` -> Avro under ``<dead_letter_root>/dead_letter/dt=.../`` and, if configured,
  a Pub/Sub dead-letter topic and a BigQuery table (``DeadLetterTableSink``).

The table and topic sinks are ``BatchSink`` objects written through the one ``WriteInBatches``
composite, under the sink's ``step`` as label. Every sink retries with bounded exponential
backoff (``SinkRetry``). Rows a sink still cannot
write become dead letters with reason ``sink_failed:<gcs|bigquery|postgres>``, counted, and go to
the same dead-letter outputs as the core's rejections, with the row as payload for a replay.
Rows a sink cannot encode (``internal_error:<step>``) and the events the metrics left out
(``metric_dead_letters``) join them. If the dead-letter outputs themselves keep failing, the
bundle fails and the runner retries it: nothing is dropped silently. Clients follow the usual
environment: Application Default Credentials, and ``PUBSUB_EMULATOR_HOST``,
``STORAGE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` against the local stack
(``tests/stack/local_stack.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.transforms import window

from pipelines.io.sinks import SinkOutputs
from pipelines.io.sinks.batches import BatchSink, SinkRetry, WriteInBatches
from pipelines.io.sinks.files import WriteDeadLetters, WriteRawEvents
from pipelines.io.sinks.gcp.bigquery import (
    USAGE_FLUSH_S,
    AuditAppendSink,
    MetricsMergeSink,
    UsageMergeSink,
)
from pipelines.io.sinks.gcp.dead_letter_table import DeadLetterTableSink
from pipelines.io.sinks.gcp.postgres import AuditInsertSink
from pipelines.io.sinks.gcp.pubsub import DeadLetterTopicSink
from transforms.audit import flatten_audit

__all__ = ["GcpConfig", "WriteGcp"]


class GcpConfig(NamedTuple):
    """Where and how the Google Cloud sinks write.

    ``raw_root`` and ``dead_letter_root`` are ``gs://bucket/prefix`` (any Beam file system
    works); ``bigquery_dataset`` is ``PROJECT.DATASET``; ``audit_db_url`` a reference
    (``env:NAME``, ``file:PATH``, ``cloudsql://`` or a URL without password);
    ``dead_letter_topic`` (``projects/P/topics/T``) and ``dead_letter_table``
    (``PROJECT.DATASET.TABLE``) are optional copies of the dead letters; ``flush_s`` bounds how
    long the table and topic sinks buffer, ``file_flush_s`` how long the file sinks do (whole
    seconds: Beam's processing-time triggers take whole seconds).
    """

    raw_root: str
    dead_letter_root: str
    bigquery_dataset: str
    audit_db_url: str
    dead_letter_topic: str | None = None
    retry: SinkRetry = SinkRetry()
    flush_s: int = 10
    file_flush_s: int = 60
    dead_letter_table: str | None = None


class WriteGcp(beam.PTransform):
    """Writes the core outputs (``CoreOutputs``) to Google Cloud.

    Args:
      config: the ``GcpConfig``.
      archive: write ``events`` to the raw archive; False when replaying the archive itself.
      metrics: merge ``metrics`` and ``usage``; False for a dead-letter replay (the
        reconciliation of the replayed days writes them).

    Returns ``SinkOutputs``; its ``sink_dead_letters`` are also written with the other dead
    letters.
    """

    def __init__(self, config: GcpConfig, archive: bool = True, metrics: bool = True):
        super().__init__()
        problems = config.retry.problems()
        if config.flush_s < 1 or config.file_flush_s < 1:
            problems.append("flush_s and file_flush_s must be >= 1 (whole seconds)")
        if problems:
            raise ValueError("; ".join(problems))
        self._config = config
        self._archive = archive
        self._metrics = metrics

    def _batches(self, pcoll, sink: BatchSink, flush_s: int | None = None):
        c = self._config
        return pcoll | sink.step >> WriteInBatches(
            sink, retry=c.retry, flush_s=max(c.flush_s, flush_s or 0)
        )

    def expand(self, outputs):
        c = self._config
        raw_files = None
        failures = []
        if self._archive:
            raw = outputs.events | "WriteRawEvents" >> WriteRawEvents(
                c.raw_root, flush_s=c.file_flush_s, retry=c.retry, dead_letter_failures=True
            )
            raw_files = raw.files
            failures.append(raw.dead_letters)
        if self._metrics:
            failures.append(outputs.metric_dead_letters)
            failures.append(self._batches(outputs.metrics, MetricsMergeSink(c.bigquery_dataset)))
            usage = UsageMergeSink(c.bigquery_dataset)
            failures.append(self._batches(outputs.usage, usage, USAGE_FLUSH_S))
        # One Flatten of the audit parts, fused on Dataflow, then one writer per store.
        audit = flatten_audit(outputs.audit, "FlattenAudit")
        failures.append(self._batches(audit, AuditInsertSink(c.audit_db_url)))
        failures.append(self._batches(audit, AuditAppendSink(c.bigquery_dataset)))
        # Each branch comes out of its own triggered global window: re-window before the
        # Flatten so the dead-letter writers see one plain windowing.
        sink_failures = [
            pcoll | f"RewindowSinkFailures{i}" >> beam.WindowInto(window.GlobalWindows())
            for i, pcoll in enumerate(failures)
        ] | "FlattenSinkFailures" >> beam.Flatten()
        dead_letters = (
            outputs.dead_letters | "RewindowDeadLetters" >> beam.WindowInto(window.GlobalWindows()),
            sink_failures,
        ) | "FlattenDeadLetters" >> beam.Flatten()
        dead_letter_files = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            c.dead_letter_root, flush_s=c.file_flush_s, retry=c.retry
        )
        if c.dead_letter_topic:
            _ = self._batches(dead_letters, DeadLetterTopicSink(c.dead_letter_topic))
        if c.dead_letter_table:
            _ = self._batches(dead_letters, DeadLetterTableSink(c.dead_letter_table))
        return SinkOutputs(raw_files, dead_letter_files, sink_failures)
