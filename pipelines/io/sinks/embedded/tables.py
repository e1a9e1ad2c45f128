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

A write that fails because of rows (a value the table cannot hold: an integer beyond int64, a
text UTF-8 cannot encode, a NULL in a required column) is not retried as it is: the table
checks its rows one by one (``EmbeddedTable.unencodable``), the rows that fail alone become dead
letters ``internal_error:<step>`` (the row as JSON) and the others are written. A failure no
single row explains still fails the bundle.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.io.sinks.batches import GatherForFlush
from pipelines.io.sinks.commits import notify_committed
from transforms.deadletter import internal_error_of, is_element_error
from transforms.elements import DeadLetter

__all__ = ["EmbeddedTable", "TableWrites", "WriteTable"]

_LOGGER = logging.getLogger(__name__)
_GLOBAL = (window.GlobalWindow(),)
LEARNT = "learnt"  # the tag of what a table hands back
_READY: set[tuple[str, str]] = set()  # (table name, file) this process has created


class EmbeddedTable:
    """What ``WriteTable`` needs from a table. Subclasses are pickled to the workers.

    ``name`` names the counters and log lines; ``step`` names the write in dead letters
    (``internal_error:<step>``); ``db_path`` is the local database file.
    """

    name = "table"
    step = "write_table"
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

    def unencodable(self, rows: Sequence[Any]) -> dict[int, Exception]:
        """The rows of ``rows`` the table cannot hold, by position, with the error each
        raises alone (checked without touching the database file). Called only after a
        write failed."""
        raise NotImplementedError


class _WriteTableFn(beam.DoFn):
    def __init__(self, table: EmbeddedTable):
        self._table = table
        namespace = f"{__name__}.{table.name}"
        self._stored = beam.metrics.Metrics.counter(namespace, "rows_stored")
        self._offered = beam.metrics.Metrics.counter(namespace, "rows_offered")
        self._flushes = beam.metrics.Metrics.counter(namespace, "flushes")
        self._retries = beam.metrics.Metrics.counter(namespace, "lock_retries")
        self._rejected = beam.metrics.Metrics.counter(namespace, "rows_not_encodable")

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
        self._letters: list[DeadLetter] = []
        self._earliest = MAX_TIMESTAMP
        self._table.open()

    def process(self, row, timestamp=beam.DoFn.TimestampParam):
        self._table.add(self._buffer, row)
        self._size += 1
        if timestamp < self._earliest:
            self._earliest = timestamp
        if self._size >= self._table.max_buffered_rows:
            self._flush()
            for output in self._table.take_outputs():
                yield beam.pvalue.TaggedOutput(LEARNT, output)

    def finish_bundle(self):
        try:
            self._flush()
        finally:
            self._table.close()
        # Rows taken out, in the global window at the bundle's earliest timestamp (they are
        # written after the rows are buffered, so they have no element of their own), and what
        # the writes learnt, stamped now.
        for letter in self._letters:
            yield WindowedValue(letter, self._earliest, _GLOBAL)
        self._letters = []
        now = Timestamp.now()
        for output in self._table.take_outputs():
            yield beam.pvalue.TaggedOutput(LEARNT, WindowedValue(output, now, _GLOBAL))

    def teardown(self) -> None:
        self._table.close()  # a bundle that failed before finish_bundle

    def _flush(self) -> None:
        rows = list(self._table.rows(self._buffer))
        self._buffer, self._size = self._table.new_buffer(), 0
        if not rows:
            return
        try:
            stored = self._table.write(rows, self._retries.inc)
        except Exception as error:
            if not is_element_error(error):
                raise
            rows, stored = self._write_encodable(rows, error)
        self._offered.inc(len(rows))
        self._stored.inc(stored)
        self._flushes.inc()
        notify_committed(self._table.name, rows)

    def _write_encodable(self, rows: list[Any], error: Exception) -> tuple[list[Any], int]:
        """After a write failed with ``error``: takes out the rows the table cannot hold (dead
        letters) and writes the others; re-raises ``error`` when no row explains it."""
        bad = self._table.unencodable(rows)
        if not bad:
            raise error
        failed_at = dt.datetime.now(dt.UTC)
        for position, row_error in bad.items():
            self._letters.append(
                internal_error_of(self._table.step, rows[position], row_error, failed_at)
            )
        self._rejected.inc(len(bad))
        kept = [row for i, row in enumerate(rows) if i not in bad]
        return kept, (self._table.write(kept, self._retries.inc) if kept else 0)


class TableWrites(NamedTuple):
    """What ``WriteTable`` returns: ``dead_letters``, the rows the table could not hold
    (``internal_error:<step>``, in the global window; usually empty), and ``learnt``, what the
    table handed back after its flushes (``EmbeddedTable.take_outputs``, in the global window;
    None for a table that hands back nothing)."""

    dead_letters: beam.PCollection
    learnt: beam.PCollection | None


class WriteTable(beam.PTransform):
    """Writes rows to an embedded table (see the module docstring).

    Input: PCollection of rows, bounded or unbounded, any windowing, with a type hint. Output:
    ``TableWrites``. Counters count rows offered and stored, flushes, lock retries and rows not
    encodable. Guarantee: every other row is committed by the time its bundle is; the table
    decides what a row already stored means (ignored, or replaced by a newer pane).
    """

    def __init__(self, table: EmbeddedTable):
        super().__init__()
        self._table = table

    def expand(self, pcoll):
        gathered = pcoll | "GatherForFlush" >> GatherForFlush(self._table.flush_s)
        if pcoll.is_bounded:
            # What a table hands back and the rows it takes out are emitted in the global
            # window (GatherForFlush puts unbounded rows there already; a bounded input keeps
            # its windows otherwise, and a row taken out of an hourly window failed its bundle).
            gathered = gathered | "Rewindow" >> beam.WindowInto(window.GlobalWindows())
        learnt_type = self._table.output_type or Any
        written = gathered | "WriteRows" >> beam.ParDo(
            _WriteTableFn(self._table)
        ).with_output_types(DeadLetter, **{LEARNT: learnt_type}).with_outputs(LEARNT, main="main")
        learnt = written[LEARNT] if self._table.output_type is not None else None
        return TableWrites(written.main, learnt)
