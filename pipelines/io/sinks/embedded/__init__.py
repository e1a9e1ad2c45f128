"""The embedded sinks (no server), applied by both pipelines under one output root.

Layout under ``output_root``: ``raw/event_date=YYYY-MM-DD/region=R/*.avro`` (redacted events),
``dead_letter/dt=YYYY-MM-DD/*.avro``, ``warehouse.duckdb`` (``metrics_minute`` and its views)
and ``audit.sqlite`` (``audit_log``). The files go through Beam's FileSystems (so ``gs://``
works for them); the two databases are local files.
"""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.transforms import window

from pipelines.io.sinks import SinkOutputs
from pipelines.io.sinks.embedded.audit import WriteAuditLog
from pipelines.io.sinks.embedded.warehouse import UpsertMetrics
from pipelines.io.sinks.files import WriteDeadLetters, WriteRawEvents

__all__ = ["AUDIT_DB", "WAREHOUSE_DB", "WriteEmbedded"]

WAREHOUSE_DB = "warehouse.duckdb"
AUDIT_DB = "audit.sqlite"


class WriteEmbedded(beam.PTransform):
    """Writes the core outputs (``CoreOutputs``) under one output root.

    Args:
      output_root: directory of all outputs (created when the pipeline runs, if missing).
      archive: write ``events`` to the raw archive; False when replaying the archive itself.
      metrics: upsert ``metrics``; False for a dead-letter replay, whose rows would hold the
        replayed events alone (the reconciliation of their days writes the metrics).

    Returns ``SinkOutputs``. Its ``sink_dead_letters`` are the rows written with the dead letters
    instead of their store: rows the metrics left out (``metric_dead_letters``) and rows a
    sink could not encode (``internal_error:<step>``). A failed write fails the bundle here
    (the runner retries it): the embedded sinks have no ``sink_failed`` dead letters.
    """

    def __init__(self, output_root: str, archive: bool = True, metrics: bool = True):
        super().__init__()
        self._root = output_root
        self._archive = archive
        self._metrics = metrics

    def expand(self, outputs):
        raw_files = None
        rows_left_out = []
        if self._archive:
            raw = outputs.events | "WriteRawEvents" >> WriteRawEvents(self._root)
            raw_files = raw.files
            rows_left_out.append(raw.dead_letters)
        if self._metrics:
            rows_left_out.append(outputs.metric_dead_letters)
            rows_left_out.append(
                outputs.metrics
                | "UpsertMetrics" >> UpsertMetrics(os.path.join(self._root, WAREHOUSE_DB))
            )
        rows_left_out.append(
            outputs.audit | "WriteAuditLog" >> WriteAuditLog(os.path.join(self._root, AUDIT_DB))
        )
        # Each comes out of a windowing of its own: into the global window before the Flatten.
        sink_dead_letters = [
            pcoll | f"RewindowRowsLeftOut{i}" >> beam.WindowInto(window.GlobalWindows())
            for i, pcoll in enumerate(rows_left_out)
        ] | "FlattenRowsLeftOut" >> beam.Flatten()
        dead_letters = (
            outputs.dead_letters | "RewindowDeadLetters" >> beam.WindowInto(window.GlobalWindows()),
            sink_dead_letters,
        ) | "FlattenDeadLetters" >> beam.Flatten()
        dead_letter_files = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(self._root)
        return SinkOutputs(raw_files, dead_letter_files, sink_dead_letters)
