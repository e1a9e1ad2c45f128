"""Deduplicate events by ``event_id``; duplicates go to an output of their own.

Guarantee:
  * Unbounded input (streaming): exact within the time-to-live. The first copy of an id to
    arrive is written; any copy arriving while the id is remembered is a duplicate. An id is
    remembered from its first copy until the watermark passes ``ttl_s`` beyond the later of
    that copy's event time and the latest event time its shard had seen when it arrived (so a
    late event is remembered for ``ttl_s`` of event time after it arrived, not after its own
    old event time); then a timer clears it, at the next step of a grid of ``ttl_s / 10``
    (so an id is remembered for at most 10% longer than the TTL). A copy arriving after that is
    written again (and counted as written): the reconciliation backfill, which dedupes over the
    whole range, corrects the metrics.
  * Bounded input (batch, backfill): exact over the whole input, whatever the time between
    copies. The copy written is the one with the earliest event time, ties broken by content
    (``copy_rank``), then by input position when the input has positions. Two strategies give
    this split:
      - with ``copies`` (JSON-lines input read in chunks with line offsets, see
        ``transforms.copies.ChooseCopies``): a first pass over a second read of the input has
        already picked, for every id carried by more than one valid line, the line to write;
        each batch is then split where it is, with no shuffle of the events. (If the picked
        line's event then fails redaction, it is dead-lettered and its other copies are still
        duplicates of it: a dead-letter replay brings it back.)
      - otherwise: a ``GroupByKey`` on the shards below.

Design: state is held per shard, ``hash(event_id) mod num_shards``, each shard holding the ids it
has seen with their expiry. One state cell per id would be the textbook layout, but measured
here it is the main cost on the DirectRunner (its watermark manager walks every key's timers on
each pass) and ~10x slower than a grouping in batch; a bounded number of shard keys keeps both
modes fast, and each input batch is split by shard first, so a shard's state is read and
written once per batch, not once per event. A streaming shard keeps its ids as sorted 128-bit
digests with their expiries in two arrays (``transforms.seen.SeenIds``), stored as one bytes
value, because the DirectRunner codes a state cell on every read and write. On Dataflow
``num_shards`` bounds the parallelism of this step: at 5k events/s, 32 shards carry ~160 events/s
each.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.deadletter import METRICS_NAMESPACE
from transforms.elements import EventBatch, RedactedEvent, event_micros
from transforms.seen import SeenIds, id_digest

__all__ = ["DUPLICATE_TAG", "DeduplicateEvents", "copy_rank", "shard_of"]

DUPLICATE_TAG = "duplicates"
_DUPLICATES = {DUPLICATE_TAG: RedactedEvent}  # the type of the duplicates output

_GLOBAL = (window.GlobalWindow(),)
# Expiry timers are set on a grid of ttl_s / _EXPIRY_GRID_STEPS (at least 1 s), so a shard's ids
# are cleared in batches, about _EXPIRY_GRID_STEPS times per TTL, instead of at every advance
# of the watermark (each firing reads and rewrites the shard's whole id map).
_EXPIRY_GRID_STEPS = 10


def shard_of(event_id: str, num_shards: int) -> int:
    """Stable shard of an id (CRC32, the same on every worker and Python process)."""
    return zlib.crc32(event_id.encode("utf-8")) % num_shards


def copy_rank(event) -> tuple[int, str, int, float, str]:
    """Batch tie-break between copies of an id (an ``Event`` or a ``RedactedEvent``): the
    lowest rank is written. Earliest event time (as µs since the epoch), then content, so the
    choice is deterministic; inputs with positions break remaining ties by position. Plain
    values only, so a rank is cheap to encode."""
    return (
        event_micros(event.event_time),
        event.request_id,
        event.token_count,
        event.latency_ms,
        event.model,
    )


def _timestamp(event: RedactedEvent) -> Timestamp:
    return Timestamp(micros=event_micros(event.event_time))


def _stamped(value, events: Iterable[RedactedEvent]) -> WindowedValue:
    """``value`` in the global window, timestamped with the earliest of ``events``."""
    earliest = min(event.event_time for event in events)
    return WindowedValue(value, Timestamp(micros=event_micros(earliest)), _GLOBAL)


def _duplicate(event: RedactedEvent):
    return beam.pvalue.TaggedOutput(DUPLICATE_TAG, WindowedValue(event, _timestamp(event), _GLOBAL))


class _SplitByShardFn(beam.DoFn):
    """Splits a batch into one ``(shard, EventBatch)`` per shard it holds, so the steps keyed
    by shard read and write each shard's state once per batch instead of once per event."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, batch: EventBatch):
        parts: dict[int, list[RedactedEvent]] = {}
        for event in batch.events:
            parts.setdefault(shard_of(event.event_id, self._num_shards), []).append(event)
        for shard, events in parts.items():
            yield _stamped((shard, EventBatch(batch.source, tuple(events))), events)


class _DedupeShardFn(beam.DoFn):
    """Streaming dedupe for one shard key, a batch of events at a time (arrival order).

    State: ``seen``, the ids seen with their expiry (µs of event time), as ``SeenIds`` bytes;
    ``next_expiry`` is the time the ``expiry`` timer is set for."""

    SEEN = ReadModifyWriteStateSpec("seen", BytesCoder())
    NEXT_EXPIRY = ReadModifyWriteStateSpec("next_expiry", VarIntCoder())
    # The latest event time this shard has seen: a stand-in for "now" in event time, so a late
    # event is remembered for ttl_s after it arrived, not after its own (old) event time.
    # One integer per shard key, so it needs no expiry of its own.
    HIGH_WATER = ReadModifyWriteStateSpec("high_water", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ttl_s: int):
        if not ttl_s or ttl_s <= 0:
            raise ValueError("ttl_s must be a positive number of seconds")
        self._ttl_micros = int(ttl_s * 1_000_000)
        self._grid_micros = max(self._ttl_micros // _EXPIRY_GRID_STEPS, 1_000_000)

    def _timer_time(self, expiry: int) -> int:
        """``expiry`` rounded up to the expiry grid."""
        return -(-expiry // self._grid_micros) * self._grid_micros

    def setup(self):
        self._unique = Metrics.counter(METRICS_NAMESPACE, "events_written")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "events_duplicate")

    def process(
        self,
        element: tuple[int, EventBatch],
        seen=beam.DoFn.StateParam(SEEN),
        next_expiry=beam.DoFn.StateParam(NEXT_EXPIRY),
        high_water=beam.DoFn.StateParam(HIGH_WATER),
        timer=beam.DoFn.TimerParam(EXPIRY),
    ):
        _, batch = element
        ids = SeenIds.from_bytes(seen.read())
        digests = [id_digest(event.event_id) for event in batch.events]
        held = ids.contains(digests)
        high = high_before = high_water.read() or 0
        added: dict[bytes, int] = {}  # digest -> expiry, of this batch's first copies
        unique: list[RedactedEvent] = []
        for event, digest, was_held in zip(batch.events, digests, held, strict=True):
            if was_held or digest in added:
                self._duplicates.inc()
                yield _duplicate(event)
                continue
            high = max(high, event_micros(event.event_time))
            added[digest] = high + self._ttl_micros
            unique.append(event)
        if high != high_before:
            high_water.write(high)
        if not unique:
            return
        seen.write(ids.with_added(list(added), list(added.values())).to_bytes())
        due = self._timer_time(min(added.values()))
        scheduled = next_expiry.read()
        if scheduled is None or due < scheduled:
            timer.set(Timestamp(micros=due))
            next_expiry.write(due)
        self._unique.inc(len(unique))
        yield _stamped(EventBatch(batch.source, tuple(unique)), unique)

    @on_timer(EXPIRY)
    def expire(
        self,
        fired_at=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        next_expiry=beam.DoFn.StateParam(NEXT_EXPIRY),
        timer=beam.DoFn.TimerParam(EXPIRY),
    ):
        remaining = SeenIds.from_bytes(seen.read()).without_expired(fired_at.micros)
        soonest = remaining.soonest()
        if soonest is None:
            seen.clear()
            next_expiry.clear()
            return
        seen.write(remaining.to_bytes())
        due = self._timer_time(soonest)
        timer.set(Timestamp(micros=due))
        next_expiry.write(due)


class _DedupeGroupFn(beam.DoFn):
    """Batch dedupe of one shard's group (exact over the whole input): one ``EventBatch`` of
    the copies written, in event-id order, and a duplicate output per other copy."""

    def setup(self):
        self._unique = Metrics.counter(METRICS_NAMESPACE, "events_written")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "events_duplicate")

    def process(self, element: tuple[int, Iterable[EventBatch]]):
        shard, batches = element
        winners: dict[str, RedactedEvent] = {}
        for batch in batches:
            for event in batch.events:
                kept = winners.get(event.event_id)
                if kept is None:
                    winners[event.event_id] = event
                    continue
                loser = event
                if copy_rank(event) < copy_rank(kept):
                    winners[event.event_id], loser = event, kept
                self._duplicates.inc()
                yield _duplicate(loser)
        if winners:
            events = tuple(winners[event_id] for event_id in sorted(winners))
            self._unique.inc(len(events))
            yield _stamped(EventBatch(f"shard-{shard}", events), events)


class _SplitByCopiesFn(beam.DoFn):
    """Batch dedupe of one batch with the copies chosen beforehand (``copies``: event id ->
    the ``(source, offset)`` of the line to write, for ids carried by more than one line)."""

    def setup(self):
        self._unique = Metrics.counter(METRICS_NAMESPACE, "events_written")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "events_duplicate")

    def process(self, batch: EventBatch, copies: dict[str, tuple[str, int]]):
        if len(batch.offsets) != len(batch.events):
            raise ValueError("deduplicating with chosen copies needs the input's line offsets")
        unique: list[RedactedEvent] = []
        for event, offset in zip(batch.events, batch.offsets, strict=True):
            chosen = copies.get(event.event_id)
            if chosen is None or chosen == (batch.source, offset):
                unique.append(event)
            else:
                self._duplicates.inc()
                yield _duplicate(event)
        if unique:
            self._unique.inc(len(unique))
            yield _stamped(EventBatch(batch.source, tuple(unique)), unique)


class DeduplicateEvents(beam.PTransform):
    """Splits batches of redacted events into copies written and duplicates, by ``event_id``.

    Input: ``EventBatch`` elements in the global window (as ``RedactPii`` emits them).
    Outputs: ``unique``, ``EventBatch`` elements of the copies written (in streaming one per
    input batch and shard; in batch one per input batch with ``copies``, else one per shard),
    each timestamped with its earliest event time; and ``DUPLICATE_TAG``, one ``RedactedEvent``
    per other copy, timestamped with its event time. Each input event is in exactly one. See
    the module docstring for the guarantee in each mode.

    Args:
      ttl_s: how long (event time, streaming) an id is remembered. Required, > 0.
      num_shards: number of state keys. More shards: more parallelism, smaller state per key.
      copies: bounded input only: a PCollection of ``(event_id, (source, offset))``, the line
        to write for each id that several lines carry (``transforms.copies.ChooseCopies``);
        the input batches must then carry their offsets.
    """

    def __init__(self, ttl_s: int = 600, num_shards: int = 32, copies=None):
        super().__init__()
        if not ttl_s or ttl_s <= 0:
            raise ValueError("ttl_s must be a positive number of seconds")
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._ttl_s = ttl_s
        self._num_shards = num_shards
        self._copies = copies

    def expand(self, batches):
        if not isinstance(batches.windowing.windowfn, window.GlobalWindows):
            raise ValueError("DeduplicateEvents needs its input in the global window")
        if self._copies is not None and not batches.is_bounded:
            raise ValueError("copies chosen beforehand work on bounded input only")
        outputs = (DUPLICATE_TAG,)
        if self._copies is not None:
            return batches | "DedupeByCopies" >> beam.ParDo(
                _SplitByCopiesFn(), copies=beam.pvalue.AsDict(self._copies)
            ).with_output_types(EventBatch, **_DUPLICATES).with_outputs(*outputs, main="unique")
        by_shard = batches | "SplitByShard" >> beam.ParDo(
            _SplitByShardFn(self._num_shards)
        ).with_output_types(tuple[int, EventBatch])
        if batches.is_bounded:
            return (
                by_shard
                | "GroupByShard" >> beam.GroupByKey()
                | "DedupeGroups"
                >> beam.ParDo(_DedupeGroupFn())
                .with_output_types(EventBatch, **_DUPLICATES)
                .with_outputs(*outputs, main="unique")
            )
        return by_shard | "DedupeStream" >> beam.ParDo(
            _DedupeShardFn(self._ttl_s)
        ).with_output_types(EventBatch, **_DUPLICATES).with_outputs(*outputs, main="unique")
