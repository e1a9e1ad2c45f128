"""Batched writes to an external service with bounded retries and a dead-letter path.

``WriteInBatches`` is the one adapter behind the Google Cloud table and topic sinks (BigQuery
metrics and audit, the PostgreSQL audit log, the Pub/Sub dead-letter topic). A sink is a small
picklable object (``BatchSink``) that knows how to write one batch and which errors are worth
retrying; this module does the batching, the retries and the dead letters, the same way for all.

Batching: elements are keyed by a stable shard of their id and re-windowed into the global
window with a trigger that fires ``flush_s`` of processing time after a shard's first buffered
element (``batch_windowing``; the raw archive writer uses the same trigger); each pane is
written in chunks of at most ``max_batch_rows``. A bounded input is written once at the end.
Fewer, larger writes matter for BigQuery: each MERGE is a billed DML job with a per-table
concurrency limit.

Failures: each batch is written with ``retry`` (exponential backoff, bounded attempts). Errors
the sink calls *transient* (unavailable, timeouts, throttling, lost connections) are retried;
errors it calls *rejected* (the service refused the rows) are not. When a batch still fails, every
element of it becomes a ``DeadLetter`` with reason ``sink_failed:<sink name>`` (counted like every
dead letter), whose payload is the element as JSON, so it can be replayed; nothing is dropped.
A sink that writes a batch but for some elements the service refused one by one raises
``RowsRefused`` with them: only those become dead letters, ``sink_failed:<sink>``.
A batch that fails because of its rows (an error of an element, ``is_element_error``, or a
rejection) is checked row by row (``BatchSink.unencodable``: the sink's own conversion and the
service's limits, without calling it): the rows that fail alone become dead letters
``internal_error:<step>`` and the others are written (with the same retries). Any other
exception, or a failure no single row explains, keeps the behaviour above: a rejection
dead-letters the batch, anything else fails the bundle. With ``dead_letter_failures=False``
(the dead-letter sinks themselves, which have nowhere further to send a failure) exhausted
retries fail the bundle instead, and the runner retries it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms import trigger, window

from pipelines.io.sinks.retry import retry_conflicts
from transforms.batching import BatchPerBundle
from transforms.deadletter import (
    count_dead_letter,
    internal_error_of,
    is_element_error,
    make_dead_letter,
    record_json,
)
from transforms.elements import DeadLetter

__all__ = [
    "SINK_FAILED",
    "BatchSink",
    "GatherForFlush",
    "RowsRefused",
    "SinkRetry",
    "WriteInBatches",
    "batch_windowing",
    "record_json",
    "sink_dead_letters",
    "write_with_retries",
]

_LOGGER = logging.getLogger(__name__)

SINK_FAILED = "sink_failed"


class SinkRetry(NamedTuple):
    """Bounded exponential backoff for one batch: ``max_attempts`` calls, the wait doubling from
    ``first_backoff_s`` up to ``max_backoff_s``, each wait fuzzed to between half and all of it.
    The defaults wait 31 s in all at most (about 15 s at least), plus the attempts' own time."""

    max_attempts: int = 6
    first_backoff_s: float = 1.0
    max_backoff_s: float = 32.0

    def problems(self) -> list[str]:
        out = []
        if self.max_attempts < 1:
            out.append("max_attempts must be >= 1")
        if self.first_backoff_s < 0 or self.max_backoff_s < self.first_backoff_s:
            out.append("need 0 <= first_backoff_s <= max_backoff_s")
        return out


class BatchSink:
    """What ``WriteInBatches`` needs from a sink. Subclasses are pickled to the workers.

    ``name`` is the sink family in the dead-letter reason (``sink_failed:<name>``); ``step`` names
    the write in dead letters and is the label ``WriteGcp`` applies it under. ``setup`` builds
    clients (called once per DoFn instance, and some runners make one per bundle: cache
    expensive clients per process). ``write`` writes one batch or raises.
    """

    name = "sink"
    step = "write"
    # How WriteInBatches batches for this sink (each can be overridden there): the element
    # field whose hash picks the shard, parallel writers, most elements per write, and whether
    # exhausted retries dead-letter the batch (False: fail the bundle, for dead-letter sinks).
    id_field = "id"
    num_shards = 1
    max_batch_rows = 500
    dead_letter_failures = True

    def setup(self) -> None:
        """Builds clients; the default does nothing."""

    def write(self, batch: Sequence[Any]) -> None:
        raise NotImplementedError

    def is_transient(self, error: Exception) -> bool:
        """True for errors a later attempt may not meet (the default: none)."""
        return False

    def is_rejected(self, error: Exception) -> bool:
        """True when the service refused the rows themselves: dead-letter without retrying."""
        return False

    def unencodable(self, batch: Sequence[Any]) -> dict[int, Exception]:
        """The elements of ``batch`` this sink cannot send, by position, with the error: its
        own conversion of each element alone, and the service's limits it knows (int64,
        valid Unicode), without calling the service. Called only after a batch failed; the
        default knows of none."""
        return {}


class RowsRefused(Exception):
    """Raised by ``BatchSink.write`` when the batch is written except ``elements``, which the
    service refused one by one (a value a column cannot take): retrying cannot help them."""

    def __init__(self, elements: Sequence[Any]):
        super().__init__(f"{len(elements)} element(s) refused")
        self.elements = list(elements)


def sink_dead_letters(
    elements: Iterable[NamedTuple],
    *,
    sink_name: str,
    step: str,
    error: Exception,
    attempts: int,
    failed_at: dt.datetime,
) -> list[DeadLetter]:
    """One dead letter per element a sink could not write.

    The payload is the element as JSON (elements reaching sinks are already redacted). The
    message names the sink, the error type and the attempts, never the service's own message,
    which may quote row values.
    """
    reason = f"{SINK_FAILED}:{sink_name}"
    message = f"{step}: {type(error).__name__} after {attempts} attempt(s)"
    letters = []
    for element in elements:
        payload = record_json(element)
        letters.append(
            make_dead_letter(
                raw=payload.encode("utf-8"),
                reason=reason,
                error_type=type(error).__name__,
                error_message=message,
                step=step,
                payload=payload,
                failed_at=failed_at,
                event_id=getattr(element, "event_id", None),
                request_id=getattr(element, "request_id", None),
            )
        )
    return letters


def write_with_retries(
    sink: BatchSink,
    batch: Sequence[Any],
    retry: SinkRetry,
    on_failed_attempt=lambda error: None,
) -> tuple[Exception, int] | None:
    """Writes ``batch`` through ``sink``; returns None, or the last error and attempts made.

    Transient errors are retried with ``retry``; a rejection returns at once; any other error
    propagates.
    """
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        sink.write(batch)

    def transient(error: Exception) -> bool:
        if sink.is_transient(error):
            on_failed_attempt(error)
            return True
        return False

    try:
        retry_conflicts(
            attempt,
            is_conflict=transient,
            max_attempts=retry.max_attempts,
            first_backoff_s=retry.first_backoff_s,
            max_backoff_s=retry.max_backoff_s,
        )
    except Exception as error:
        if sink.is_transient(error) or sink.is_rejected(error):
            return error, attempts
        raise
    return None


def batch_windowing(unbounded: bool, flush_s: int) -> beam.WindowInto:
    """The global-window batching both the file and the table sinks use.

    Streaming: records of any event time go into the global window, where nothing is ever late
    (an event-time window would drop hours-late records at the GroupByKey), and a pane fires per
    key ``flush_s`` seconds (processing time) after its first record. DISCARDING, because each
    pane is written once; accumulating would rewrite earlier records. The firings are the early
    firings of ``AfterWatermark`` rather than a bare ``Repeatedly``: the same panes, plus a final
    pane when the watermark reaches the end of the global window (drain, or the end of a finite
    stream); on the Python DirectRunner a bare ``Repeatedly`` never fires what is left at the
    end. Empty panes can fire; writers skip them. Batch: one pane per key at the end.

    There is no size trigger: in the Python SDK ``AfterAny(AfterCount(n),
    AfterProcessingTime(s))`` fires once and then never again, because ``AfterAny.on_fire``
    asks its sub-triggers in the watermark domain, so the processing-time one is never reset and
    never sets a new timer (seen on the DirectRunner reading Pub/Sub; Beam 2.77). Writers cap
    the size of each write by cutting a pane into chunks instead. ``flush_s`` is whole seconds
    (Beam's processing-time trigger does not take fractions).
    """
    if not unbounded:
        return beam.WindowInto(window.GlobalWindows())
    return beam.WindowInto(
        window.GlobalWindows(),
        trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(flush_s)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING,
    )


class GatherForFlush(beam.PTransform):
    """Streaming: gathers what arrives within ``flush_s`` seconds of processing time into one
    bundle, so that a writer commits it in one transaction; bounded input passes through.

    For the embedded table sinks, whose cost per commit (opening DuckDB, SQLite's fsync) is
    far above their cost per row. Elements go into the global window (``batch_windowing``),
    into one batch per upstream bundle (``BatchPerBundle``), and onto one key, so the
    GroupByKey moves one element per bundle rather than one per record; the output is the
    records again, one per element, in the global window. Input: any windowing, with a type
    hint (the batches' coder is built from it).
    """

    def __init__(self, flush_s: int):
        super().__init__()
        if flush_s < 1:
            raise ValueError("flush_s must be >= 1 (whole seconds)")
        self._flush_s = flush_s

    def expand(self, pcoll):
        if pcoll.is_bounded:
            return pcoll
        element_type = pcoll.element_type
        batch_type = tuple[element_type, ...]
        return (
            pcoll
            | "Rewindow" >> batch_windowing(True, self._flush_s)
            | "BatchPerBundle" >> BatchPerBundle(tuple, batch_type)
            | "OneKey"
            >> beam.Map(lambda batch: (0, batch)).with_output_types(tuple[int, batch_type])
            | "Gather" >> beam.GroupByKey()
            | "Ungroup"
            >> beam.FlatMap(lambda kv: itertools.chain.from_iterable(kv[1])).with_output_types(
                element_type
            )
        )


def _shard_key(element: Any, id_field: str, num_shards: int) -> tuple[int, Any]:
    value = getattr(element, id_field)
    if not isinstance(value, str):
        value = repr(value)
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % num_shards, element


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _WriteBatchesFn(beam.DoFn):
    """Writes each grouped pane in chunks of ``max_batch_rows``; yields what still failed."""

    def __init__(
        self, sink: BatchSink, retry: SinkRetry, max_batch_rows: int, dead_letter_failures: bool
    ):
        self._sink = sink
        self._retry = retry
        self._max_batch_rows = max_batch_rows
        self._dead_letter_failures = dead_letter_failures
        namespace = f"{__name__}.{sink.step}"
        self._rows = beam.metrics.Metrics.counter(namespace, "rows_written")
        self._batches = beam.metrics.Metrics.counter(namespace, "batches_written")
        self._failed_attempts = beam.metrics.Metrics.counter(namespace, "failed_attempts")
        self._failed_rows = beam.metrics.Metrics.counter(namespace, "rows_dead_lettered")
        self._unencodable = beam.metrics.Metrics.counter(namespace, "rows_not_encodable")

    def setup(self) -> None:
        self._sink.setup()

    def _note_failure(self, error: Exception) -> None:
        # Rare and slow (there is a backoff after it): worth a log line. Type only, never the
        # service's message (it may quote row values).
        self._failed_attempts.inc()
        _LOGGER.warning("%s: attempt failed (%s); retrying", self._sink.step, type(error).__name__)

    def process(self, element: tuple[int, Iterable[Any]]) -> Iterator[DeadLetter]:
        _, grouped = element
        items = list(grouped)
        for chunk in _chunks(items, self._max_batch_rows):
            try:
                chunk, failure = yield from self._write_rows(chunk)
            except RowsRefused as refused:  # the rest of the chunk is written
                chunk, failure = refused.elements, (refused, 1)
            if failure is None:
                self._rows.inc(len(chunk))
                self._batches.inc()
                continue
            error, attempts = failure
            if not self._dead_letter_failures:
                raise error
            _LOGGER.error(
                "%s: %d rows dead-lettered after %d attempt(s) (%s)",
                self._sink.step,
                len(chunk),
                attempts,
                type(error).__name__,
            )
            self._failed_rows.inc(len(chunk))
            for letter in sink_dead_letters(
                chunk,
                sink_name=self._sink.name,
                step=self._sink.step,
                error=error,
                attempts=attempts,
                failed_at=dt.datetime.now(dt.UTC),
            ):
                count_dead_letter(letter.reason)
                yield letter

    def _write_rows(
        self, chunk: Sequence[Any]
    ) -> Generator[DeadLetter, None, tuple[Sequence[Any], tuple[Exception, int] | None]]:
        """Writes ``chunk``, taking out the rows the sink cannot send after a failure they
        explain (their dead letters are yielded); returns the rows still to account for and
        the failure, None when they are written. ``RowsRefused`` propagates."""
        try:
            failure = self._write(chunk)
        except RowsRefused:
            raise
        except Exception as error:
            if not is_element_error(error):
                raise
            chunk, letters = self._take_out_unencodable(chunk, error)
            yield from letters
            failure = self._write(chunk)
        else:
            if failure is not None and self._sink.is_rejected(failure[0]):
                chunk, letters = self._take_out_unencodable(chunk, None)
                yield from letters
                if letters:  # the rest again, with its own retries
                    failure = self._write(chunk)
        return chunk, failure

    def _write(self, chunk: Sequence[Any]) -> tuple[Exception, int] | None:
        if not chunk:
            return None
        try:
            return write_with_retries(self._sink, chunk, self._retry, self._note_failure)
        except RowsRefused as refused:  # the rest of the chunk is written
            self._rows.inc(len(chunk) - len(refused.elements))
            self._batches.inc()
            raise

    def _take_out_unencodable(
        self, chunk: Sequence[Any], error: Exception | None
    ) -> tuple[Sequence[Any], list[DeadLetter]]:
        """After ``chunk`` failed: the rows the sink cannot send become ``internal_error``
        dead letters; returns the other rows and the dead letters. ``error`` (an element's
        error from the write) is raised again when no row explains it; None: the batch was
        rejected, which then stays a rejection of the whole batch."""
        bad = self._sink.unencodable(chunk)
        if not bad:
            if error is not None:
                raise error
            return chunk, []
        if not self._dead_letter_failures:  # nowhere to send them: a bug to fix, not data
            raise error or next(iter(bad.values()))
        failed_at = dt.datetime.now(dt.UTC)
        letters = [
            internal_error_of(self._sink.step, chunk[i], row_error, failed_at)
            for i, row_error in bad.items()
        ]
        self._unencodable.inc(len(bad))
        return [row for i, row in enumerate(chunk) if i not in bad], letters


class WriteInBatches(beam.PTransform):
    """Writes elements through a ``BatchSink`` in batches, with retries and dead letters.

    Input: PCollection of records (NamedTuples with an ``id_field``), bounded or unbounded, any
    windowing. Output: PCollection[DeadLetter] of the elements that could not be written (empty
    when everything was written; with ``dead_letter_failures=False`` it is always empty).

    Guarantee: at least once. A batch whose write succeeded is not written again by this
    transform, but a runner retry of the bundle rewrites it, so sinks must be idempotent (they
    are: MERGE, ON CONFLICT DO NOTHING, insert ids, ids in topic attributes).

    Args:
        sink: the ``BatchSink``; it also gives the defaults of the arguments below that are
          None (its ``id_field``, ``max_batch_rows``, ``num_shards``, ``dead_letter_failures``).
        retry: backoff and attempts per batch.
        flush_s: unbounded input: longest wait (processing time) before a batch is written.
        id_field: element field whose hash picks the shard (the same id, the same shard).
        max_batch_rows: most elements per write call.
        num_shards: parallel writers; 1 serialises writes (what BigQuery DML wants).
        dead_letter_failures: False: exhausted retries fail the bundle instead.
    """

    def __init__(
        self,
        sink: BatchSink,
        *,
        retry: SinkRetry = SinkRetry(),  # noqa: B008 - immutable NamedTuple
        flush_s: int = 10,
        id_field: str | None = None,
        max_batch_rows: int | None = None,
        num_shards: int | None = None,
        dead_letter_failures: bool | None = None,
    ):
        super().__init__()
        self._id_field = id_field or sink.id_field
        self._max_batch_rows = max_batch_rows or sink.max_batch_rows
        self._num_shards = num_shards or sink.num_shards
        self._dead_letter_failures = (
            sink.dead_letter_failures if dead_letter_failures is None else dead_letter_failures
        )
        problems = retry.problems()
        if flush_s < 1 or self._max_batch_rows < 1 or self._num_shards < 1:
            problems.append("need flush_s >= 1, max_batch_rows >= 1 and num_shards >= 1")
        if problems:
            raise ValueError("; ".join(problems))
        self._sink = sink
        self._retry = retry
        self._flush_s = flush_s

    def expand(self, pcoll):
        return (
            pcoll
            | "KeyByShard" >> beam.Map(_shard_key, self._id_field, self._num_shards)
            | "Batch" >> batch_windowing(not pcoll.is_bounded, self._flush_s)
            | "GroupBatches" >> beam.GroupByKey()
            | "WriteBatches"
            >> beam.ParDo(
                _WriteBatchesFn(
                    self._sink, self._retry, self._max_batch_rows, self._dead_letter_failures
                )
            )
        )
