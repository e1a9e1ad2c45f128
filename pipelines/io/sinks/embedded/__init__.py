"""The embedded sinks (no server), applied by both pipelines under one output root.

Layout under ``output_root``: ``raw/event_date=YYYY-MM-DD/region=R/*.avro`` (redacted events),
``dead_letter/dt=YYYY-MM-DD/*.avro``, ``warehouse.duckdb`` (``metrics_minute``, its rollups,
``freshness_minute``, ``usage_hourly`` and the views) and ``audit.sqlite`` (``audit_log``). The
files go through Beam's FileSystems (so ``gs://`` works for them); the two databases are local
files.
"""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.transforms import window

from pipelines.io.sinks import SinkOutputs
from pipelines.io.sinks.embedded.audit import WriteAuditLog
from pipelines.io.sinks.embedded.warehouse import UpsertMetrics, UpsertUsage
from pipelines.io.sinks.files import DEFAULT_FLUSH_S as FILE_FLUSH_S
from pipelines.io.sinks.files import WriteDeadLetters, WriteRawEvents
from transforms.audit import flatten_audit

__all__ = ["AUDIT_DB", "WAREHOUSE_DB", "WriteEmbedded"]

WAREHOUSE_DB = "warehouse.duckdb"
AUDIT_DB = "audit.sqlite"


class WriteEmbedded(beam.PTransform):
    """Writes the core outputs (``CoreOutputs``) under one output root.

    Args:
      output_root: directory of all outputs (created when the pipeline runs, if missing).
      archive: write ``events`` to the raw archive; False when replaying the archive itself.
      metrics: upsert ``metrics`` (and ``usage``); False for a dead-letter replay, whose rows
        would hold the replayed events alone (the reconciliation of their days writes them).
      file_flush_s: streaming: longest wait before buffered archive and dead-letter records
        are written as a file.

    Returns ``SinkOutputs``. Its ``sink_dead_letters`` are the rows written with the dead letters
    instead of their store: rows the metrics left out (``metric_dead_letters``) and rows a
    sink could not encode (``internal_error:<step>``). A failed write fails the bundle here
    (the runner retries it): the embedded sinks have no ``sink_failed`` dead letters.
    ``freshness``: what the metrics commits made visible, when metrics are written.
    """

    def __init__(
        self,
        output_root: str,
        archive: bool = True,
        metrics: bool = True,
        file_flush_s: int = FILE_FLUSH_S,
    ):
        super().__init__()
        self._root = output_root
        self._archive = archive
        self._metrics = metrics
        self._file_flush_s = file_flush_s

    def expand(self, outputs):
        raw_files = None
        rows_left_out = []
        if self._archive:
            raw = outputs.events | "WriteRawEvents" >> WriteRawEvents(
                self._root, flush_s=self._file_flush_s
            )
            raw_files = raw.files
            rows_left_out.append(raw.dead_letters)
        freshness = None
        if self._metrics:
            warehouse = os.path.join(self._root, WAREHOUSE_DB)
            rows_left_out.append(outputs.metric_dead_letters)
            metrics = outputs.metrics | "UpsertMetrics" >> UpsertMetrics(warehouse)
            freshness = metrics.learnt
            rows_left_out.append(metrics.dead_letters)
            usage = outputs.usage | "UpsertUsage" >> UpsertUsage(warehouse)
            rows_left_out.append(usage.dead_letters)
        audit_db = os.path.join(self._root, AUDIT_DB)
        parts = tuple(outputs.audit)
        if parts[0].is_bounded:
            # A writer per part: Beam's local batch runner would hold a Flatten's every
            # element in memory (transforms.audit.RecordOutcomes); SQLite takes the writers'
            # transactions one after another.
            for i, part in enumerate(parts):
                audit = part | f"WriteAuditLog{i}" >> WriteAuditLog(audit_db)
                rows_left_out.append(audit.dead_letters)
        else:
            audit = flatten_audit(parts, "FlattenAudit") | "WriteAuditLog" >> WriteAuditLog(
                audit_db
            )
            rows_left_out.append(audit.dead_letters)
        # Each comes out of a windowing of its own: into the global window before the Flatten.
        sink_dead_letters = [
            pcoll | f"RewindowRowsLeftOut{i}" >> beam.WindowInto(window.GlobalWindows())
            for i, pcoll in enumerate(rows_left_out)
        ] | "FlattenRowsLeftOut" >> beam.Flatten()
        dead_letters = (
            outputs.dead_letters | "RewindowDeadLetters" >> beam.WindowInto(window.GlobalWindows()),
            sink_dead_letters,
        ) | "FlattenDeadLetters" >> beam.Flatten()
        dead_letter_files = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            self._root, flush_s=self._file_flush_s
        )
        return SinkOutputs(raw_files, dead_letter_files, sink_dead_letters, freshness=freshness)
