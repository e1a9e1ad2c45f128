"""The one writer of the embedded databases: ``WriteTable`` buffers rows and commits them to a
local table per bundle (DuckDB ``metrics_minute``, SQLite ``audit_log``).

A table is described by an ``EmbeddedTable`` (picklable, built on the launching side): how to
create it, how a new row joins the buffer (the metrics keep only the newest pane per key), and
how to write a buffer in one transaction. ``WriteTable`` does the rest the same way for both:
streaming input is gathered for ``flush_s`` seconds of processing time first (``GatherForFlush``:
opening DuckDB or an fsync per commit costs far more than a row), each bundle's rows are
written in one transaction when it finishes (or when ``max_buffered_rows`` are buffered), lock
conflicts are retried with backoff by the table, and a write that still fails fails the bundle,
which the runner retries; both tables are idempotent, so that is safe. A table may also hand back
what a write learnt (the metrics table: the freshness of the events it made visible), which
``WriteTable`` emits after each flush. Local files only: this is the embedded default, not
Dataflow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.io.sinks.batches import GatherForFlush
from pipelines.io.sinks.commits import notify_committed

__all__ = ["EmbeddedTable", "WriteTable"]

_LOGGER = logging.getLogger(__name__)
_READY: set[tuple[str, str]] = set()  # (table name, file) this process has created
_GLOBAL = (window.GlobalWindow(),)


class EmbeddedTable:
    """What ``WriteTable`` needs from a table. Subclasses are pickled to the workers.

    ``name`` names the counters and log lines; ``db_path`` is the local database file.
    """

    name = "table"
    output_type: Any = None  # the type of what take_outputs returns, if anything

    def __init__(self, db_path: str, *, max_buffered_rows: int, flush_s: int):
        if not db_path or "://" in db_path:
            raise ValueError(f"db_path must be a local file path, got {db_path!r}")
        if max_buffered_rows < 1 or flush_s < 1:
            raise ValueError("need max_buffered_rows >= 1 and flush_s >= 1")
        self.db_path = db_path
        self.max_buffered_rows = max_buffered_rows
        self.flush_s = flush_s

    def create(self) -> None:
        """Creates the database file and table if missing (idempotent)."""
        raise NotImplementedError

    def new_buffer(self) -> Any:
        return []

    def add(self, buffer: Any, row: Any) -> None:
        buffer.append(row)

    def rows(self, buffer: Any) -> Iterable[Any]:
        return buffer

    def open(self) -> None:
        """Called at the start of a bundle (a connection kept for its flushes, say)."""

    def close(self) -> None:
        """Called when a bundle ends, or fails."""

    def write(self, rows: list[Any], on_retry: Callable[[], None]) -> int:
        """Writes ``rows`` in one transaction; returns the rows the table stored anew."""
        raise NotImplementedError

    def take_outputs(self) -> list[Any]:
        """What the writes since the last call learnt, to emit (default: nothing)."""
        return []


class _WriteTableFn(beam.DoFn):
    def __init__(self, table: EmbeddedTable):
        self._table = table
        namespace = f"{__name__}.{table.name}"
        self._stored = beam.metrics.Metrics.counter(namespace, "rows_stored")
        self._offered = beam.metrics.Metrics.counter(namespace, "rows_offered")
        self._flushes = beam.metrics.Metrics.counter(namespace, "flushes")
        self._retries = beam.metrics.Metrics.counter(namespace, "lock_retries")

    def setup(self) -> None:
        # Some runners (the DirectRunner in streaming) call setup() for every bundle: create
        # the table once per process and file.
        key = (self._table.name, self._table.db_path)
        if key in _READY and os.path.exists(self._table.db_path):
            return
        self._table.create()
        _READY.add(key)
        _LOGGER.info("%s ready at %s", self._table.name, self._table.db_path)

    def start_bundle(self) -> None:
        self._buffer = self._table.new_buffer()
        self._size = 0
        self._table.open()

    def process(self, row):
        self._table.add(self._buffer, row)
        self._size += 1
        if self._size >= self._table.max_buffered_rows:
            self._flush()
            yield from self._table.take_outputs()

    def finish_bundle(self):
        try:
            self._flush()
        finally:
            self._table.close()
        now = Timestamp.now()
        for output in self._table.take_outputs():
            yield WindowedValue(output, now, _GLOBAL)

    def teardown(self) -> None:
        self._table.close()  # a bundle that failed before finish_bundle

    def _flush(self) -> None:
        rows = list(self._table.rows(self._buffer))
        self._buffer, self._size = self._table.new_buffer(), 0
        if not rows:
            return
        stored = self._table.write(rows, self._retries.inc)
        notify_committed(self._table.name, rows)
        self._offered.inc(len(rows))
        self._stored.inc(stored)
        self._flushes.inc()


class WriteTable(beam.PTransform):
    """Writes rows to an embedded table (see the module docstring).

    Input: PCollection of rows, bounded or unbounded, any windowing, with a type hint. Output:
    what the table hands back after its flushes (``EmbeddedTable.take_outputs``; for most
    tables nothing), in the global window. Counters count rows offered and stored, flushes and
    lock retries.
    Guarantee: every row is committed by the time its bundle is; the table decides what a row
    already stored means (ignored, or replaced by a newer pane).
    """

    def __init__(self, table: EmbeddedTable):
        super().__init__()
        self._table = table

    def expand(self, pcoll):
        gathered = pcoll | "GatherForFlush" >> GatherForFlush(self._table.flush_s)
        if pcoll.is_bounded and self._table.output_type is not None:
            # What a table hands back is emitted in the global window (GatherForFlush puts
            # unbounded rows there already; a bounded input keeps its windows otherwise).
            gathered = gathered | "Rewindow" >> beam.WindowInto(window.GlobalWindows())
        write = beam.ParDo(_WriteTableFn(self._table))
        if self._table.output_type is not None:
            write = write.with_output_types(self._table.output_type)
        return gathered | "WriteRows" >> write
