"""Deduplicate events by ``event_id``; duplicates go to an output of their own.

Guarantee:
  * Unbounded input (streaming): exact within the time-to-live, with either strategy
    (``strategy``, below). The first copy of an id to reach the dedupe state is written; any
    copy reaching it while the id is remembered is a duplicate (a conflict when its content
    differs). An id is remembered from its
    first copy until the watermark passes its expiry, ``ttl_s`` beyond the later of the copy's
    event time and its *arrival*, an estimate in event time of when it arrived
    (``expiry_micros``): so a late event is remembered for ``ttl_s`` after it arrived, not
    after its own old event time. A copy arriving after that is written again (and counted as
    written): the reconciliation backfill, which dedupes over the whole range, corrects the
    metrics. The strategies differ in the arrival estimate and in when the state is cleared:
      - ``sharded``: arrival is the latest event time of a first copy its shard had seen
        (``shard_of``: CRC32 of the id mod ``num_shards``; this copy included). A timer
        clears expired ids at the next step of a grid of ``ttl_s / 10`` (at least 1 s), so an
        id is remembered for at most 10% longer than its expiry.
      - ``per_key``: arrival is a clock read when the copy is processed (``clock``, by default
        the worker's wall clock, ``Timestamp.now()``: on a live stream the watermark follows
        it). One timer per id clears it at its expiry exactly (a grid would only bunch the
        firings).
    Where the two can differ: (a) a backlog read into a stream (catch-up after an outage, a
    replay through the streaming pipeline): the clock runs ahead of the event times and the
    watermark, so ``per_key`` remembers each id until the watermark reaches the clock's
    reading plus ``ttl_s``, i.e. for the backlog plus the TTL (more state, no fewer duplicates
    caught), where ``sharded`` remembers ``ttl_s`` past its shard's event times; (b) a quiet
    shard's latest event time lags the stream, so ``sharded`` may remember a late event for
    less than ``ttl_s`` after it really arrived, where the clock does not lag; (c) the grid:
    ``sharded`` may remember an id up to ``ttl_s / 10`` longer; (d) among copies of one input
    batch, ``sharded`` writes the first in the batch's order (they reach their shard in one
    element), ``per_key`` any one of them (one element per event, and Beam does not order
    elements between steps). Events stamped ahead of the clock (clock skew) use their event
    time in both.
  * Bounded input (batch, backfill), whatever ``strategy``: exact over the whole input,
    whatever the time between copies, and across runs where the run reads the archive. The
    copy written is the rule's winner (``transforms.winner``): a copy already archived first,
    else the first copy in the input (by file, then byte offset; by input identity for a
    dead-letter replay); the winning input read again (a re-run) is written again. Two ways
    give this split:
      - with ``copies`` (JSON-lines input read in chunks with line offsets, see
        ``transforms.copies.ChooseCopies``): a first pass over a second read of the input, and
        the archived copies of the partitions it touches, has already picked, for every id
        carried by more than one line or already archived, the winning input and its content;
        each batch is then split where it is, with no shuffle of the events. (If the winning
        line's event then fails redaction, it is dead-lettered and its other copies are still
        duplicates of it: a dead-letter replay brings it back.)
      - otherwise: a ``GroupByKey`` on the shards below, joined with ``archived`` copies when
        given (a dead-letter replay); with ``archived_input`` the events themselves are
        archived copies (a reconciliation), ranked as the archive ranks them.
  * Every strategy tells a copy whose content differs from the winner's
    (``content_digest``) apart: it goes to ``CONFLICT_TAG`` (``duplicate_conflict``, counter
    ``events_duplicate_conflict``) instead of ``DUPLICATE_TAG``. Streaming compares with the
    first copy the state holds (the sharded state keeps each id's content digest beside it).

Errors: an event the dedupe cannot key (an id UTF-8 cannot encode, an event time that is not
an aware datetime: a broken element, never one that parsing or the archive produces) is checked
where each strategy takes its input and becomes a dead letter ``internal_error:dedupe``, with
the event as a replayable payload, on the ``DEAD_LETTER_TAG`` output: it is neither written nor
a duplicate, and it does not fail the bundle (``transforms.deadletter``).

When each is used: ``per_key`` on Dataflow, ``sharded`` on the local runners. ``per_key`` is
the shape of Beam's own ``DeduplicatePerKey``: one state key per id, so the step spreads over
any number of workers and each event reads and writes a few bytes. ``sharded`` holds state per
shard, each shard holding the ids it has seen with their expiry. One state cell per id is the
textbook layout, but measured here it is the main cost on the DirectRunner (its watermark
manager walks every key's timers on each pass) and ~10x slower than a grouping in batch; a
bounded number of shard keys keeps both modes fast there, and each input batch is split by
shard first, so a shard's state is read and written once per batch, not once per event. A
streaming shard keeps its ids as sorted 128-bit digests with their expiries in two arrays
(``transforms.seen.SeenIds``), stored as one bytes value, because the DirectRunner codes a
state cell on every read and write. On Dataflow ``num_shards`` bounds the parallelism of that
step (at 5k events/s, 32 shards carry ~160 events/s each) and each bundle rewrites the whole
value of every shard it touches.

State size per 1,000 events/s at the default TTL (3,660 s): ids held = rate x TTL = 3.66 M.
  * ``sharded``: 32 bytes per id (16-byte digest, 8-byte expiry, 8-byte content digest):
    ~117 MB (up to ~129 MB, the grid's 10%), in ``num_shards`` values: ~3.7 MB per shard at 32
    shards, each rewritten whole when a batch reaches it; an input batch of 100 events reaches
    ~31 of the 32 shards, so ~113 MB is written for it.
  * ``per_key``: one state cell (``first_digest``, an 8-byte value) and one watermark timer
    per id. Assuming 36-character UUID ids (37 bytes coded), ~12-byte state and timer tags and
    a timer holding its firing and hold times (8 bytes each): ~58 bytes for the cell and ~65
    for the timer, ~120 bytes per id, ~0.44 GB, about 5x the sharded layout, before the
    per-entry overhead of Dataflow's state store (not published; not counted). It is spread
    over the id keyspace, and an event writes its own ~120 bytes, not a shard's whole value.

Length (over 600 lines): the docstring states the guarantee of each strategy; both streaming
strategies and the batch grouping stay beside it, so the guarantee and its code are read
together.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

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

from transforms.audit import DUPLICATE_CONFLICT, WRITTEN
from transforms.batching import BatchPerBundle
from transforms.deadletter import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    internal_error_of,
    is_element_error,
)
from transforms.elements import DeadLetter, EventBatch, RedactedEvent, event_micros
from transforms.seen import UNKNOWN_CONTENT, SeenIds, content_number, id_digest
from transforms.winner import (
    ArchivedCopy,
    Candidate,
    archived_rank,
    content_digest,
    copy_outcome,
    run_candidate,
)

__all__ = [
    "CONFLICT_TAG",
    "DEDUPE_STRATEGIES",
    "DEFAULT_TTL_S",
    "DUPLICATE_TAG",
    "DeduplicateEvents",
    "content_digest",
    "expiry_micros",
    "shard_of",
    "sharded_clear_micros",
]

DUPLICATE_TAG = "duplicates"
# Copies of an id whose content differs from the copy written (duplicate_conflict).
CONFLICT_TAG = "conflicts"
# The streaming strategies (see the module docstring); bounded input ignores the choice.
DEDUPE_STRATEGIES = ("sharded", "per_key")
# A 1-hour allowed lateness plus a 1-minute window (the metrics' defaults, AggregateMetrics):
# an id is remembered at least as long as the window of its first copy still takes late data,
# so no copy the metrics would still count is written twice.
DEFAULT_TTL_S = 60 * 60 + 60
# The types of the side outputs.
_DUPLICATES = {DUPLICATE_TAG: RedactedEvent, CONFLICT_TAG: RedactedEvent}
_SIDE_TAGS = (DUPLICATE_TAG, CONFLICT_TAG)
_DEAD_LETTERS = {DEAD_LETTER_TAG: DeadLetter}

_GLOBAL = (window.GlobalWindow(),)
# Expiry timers are set on a grid of ttl_s / _EXPIRY_GRID_STEPS (at least 1 s), so a shard's ids
# are cleared in batches, about _EXPIRY_GRID_STEPS times per TTL, instead of at every advance
# of the watermark (each firing reads and rewrites the shard's whole id map).
_EXPIRY_GRID_STEPS = 10


def shard_of(event_id: str, num_shards: int) -> int:
    """Stable shard of an id (CRC32, the same on every worker and Python process)."""
    return zlib.crc32(event_id.encode("utf-8")) % num_shards


def expiry_micros(event_time_micros: int, arrival_micros: int, ttl_micros: int) -> int:
    """When a first copy's id expires (µs of event time): ``ttl_micros`` beyond the later of its
    event time and its arrival (an estimate, in event time, of when it arrived). Both streaming
    strategies remember an id until the watermark passes this; they differ in the arrival
    estimate (see the module docstring)."""
    return max(event_time_micros, arrival_micros) + ttl_micros


def sharded_clear_micros(expiry: int, ttl_micros: int) -> int:
    """When the sharded strategy clears an id of this expiry (µs): the expiry rounded up to a
    grid of ``ttl_micros / 10``, at least 1 s, so at most 10% of the TTL later."""
    grid = max(ttl_micros // _EXPIRY_GRID_STEPS, 1_000_000)
    return -(-expiry // grid) * grid


def _timestamp(event: RedactedEvent) -> Timestamp:
    return Timestamp(micros=event_micros(event.event_time))


def _stamped(value, events: Iterable[RedactedEvent]) -> WindowedValue:
    """``value`` in the global window, timestamped with the earliest of ``events``."""
    earliest = min(event.event_time for event in events)
    return WindowedValue(value, Timestamp(micros=event_micros(earliest)), _GLOBAL)


def _ttl_micros(ttl_s) -> int:
    if ttl_s is None or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    return int(ttl_s * 1_000_000)


def _loser(event: RedactedEvent, conflict: bool):
    """A copy that is not written, to the duplicates or, with ``conflict``, the conflicts."""
    tag = CONFLICT_TAG if conflict else DUPLICATE_TAG
    return beam.pvalue.TaggedOutput(tag, WindowedValue(event, _timestamp(event), _GLOBAL))


class _Counters:
    """The dedupe's outcome counters (namespace ``genai``)."""

    def __init__(self):
        self.unique = Metrics.counter(METRICS_NAMESPACE, "events_written")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "events_duplicate")
        self.conflicts = Metrics.counter(METRICS_NAMESPACE, "events_duplicate_conflict")

    def lost(self, conflict: bool) -> None:
        (self.conflicts if conflict else self.duplicates).inc()


def _internal_error(event: RedactedEvent, error: Exception):
    """The ``internal_error:dedupe`` dead letter of ``event`` (at the input batch's timestamp)."""
    return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, internal_error_of("dedupe", event, error))


def _keying_error(event: RedactedEvent) -> Exception | None:
    """What keeps the dedupe from keying ``event`` (None: nothing). Every strategy derives
    what it needs from the id's UTF-8 bytes (``shard_of``, ``id_digest``) and from the event
    time as µs (``event_micros``); checking these once where an event enters is enough."""
    try:
        shard_of(event.event_id, 1)
        event_micros(event.event_time)
    except Exception as error:
        if not is_element_error(error):
            raise
        return error
    return None


class _SplitByShardFn(beam.DoFn):
    """Splits a batch into one ``(shard, EventBatch)`` per shard it holds, so the steps keyed
    by shard read and write each shard's state once per batch instead of once per event."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, batch: EventBatch):
        parts: dict[int, list[RedactedEvent]] = {}
        for event in batch.events:
            error = _keying_error(event)
            if error is not None:
                yield _internal_error(event, error)
                continue
            parts.setdefault(shard_of(event.event_id, self._num_shards), []).append(event)
        for shard, events in parts.items():
            yield _stamped((shard, EventBatch(batch.source, tuple(events))), events)


class _DedupeShardFn(beam.DoFn):
    """Streaming dedupe for one shard key, a batch of events at a time (arrival order).

    State: ``seen``, the ids seen with their expiry (µs of event time) and their first copy's
    content digest, as ``SeenIds`` bytes; ``next_expiry`` is the time the ``expiry`` timer is
    set for."""

    SEEN = ReadModifyWriteStateSpec("seen", BytesCoder())
    NEXT_EXPIRY = ReadModifyWriteStateSpec("next_expiry", VarIntCoder())
    # The latest event time this shard has seen: a stand-in for "now" in event time, so a late
    # event is remembered for ttl_s after it arrived, not after its own (old) event time.
    # One integer per shard key, so it needs no expiry of its own.
    HIGH_WATER = ReadModifyWriteStateSpec("high_water", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ttl_s: int):
        self._ttl_micros = _ttl_micros(ttl_s)

    def setup(self):
        self._counters = _Counters()

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
        held = ids.lookup(digests)
        high = high_before = high_water.read() or 0
        # digest -> (expiry, content), of this batch's first copies
        added: dict[bytes, tuple[int, int]] = {}
        unique: list[RedactedEvent] = []
        for event, digest, held_content in zip(batch.events, digests, held, strict=True):
            content = content_number(content_digest(event))
            if held_content is None and digest in added:
                held_content = added[digest][1]
            if held_content is not None:
                conflict = held_content not in (content, UNKNOWN_CONTENT)
                self._counters.lost(conflict)
                yield _loser(event, conflict)
                continue
            at = event_micros(event.event_time)
            high = max(high, at)
            added[digest] = (expiry_micros(at, high, self._ttl_micros), content)
            unique.append(event)
        if high != high_before:
            high_water.write(high)
        if not unique:
            return
        expiries = [expiry for expiry, _ in added.values()]
        contents = [content for _, content in added.values()]
        seen.write(ids.with_added(list(added), expiries, contents).to_bytes())
        due = sharded_clear_micros(min(expiries), self._ttl_micros)
        scheduled = next_expiry.read()
        if scheduled is None or due < scheduled:
            timer.set(Timestamp(micros=due))
            next_expiry.write(due)
        self._counters.unique.inc(len(unique))
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
        due = sharded_clear_micros(soonest, self._ttl_micros)
        timer.set(Timestamp(micros=due))
        next_expiry.write(due)


def _wall_clock() -> Timestamp:
    # A plain function, not the bound method Timestamp.now: the local runner's spec cache
    # (pipelines.local.direct_runner_fixes) re-inspects DoFns that hold bound methods.
    return Timestamp.now()


class _KeyByEventIdFn(beam.DoFn):
    """Explodes a batch into one ``(event_id, event)`` per event, timestamped with its event
    time (the per-key strategy's input)."""

    def process(self, batch: EventBatch):
        for event in batch.events:
            error = _keying_error(event)
            if error is not None:
                yield _internal_error(event, error)
                continue
            yield WindowedValue((event.event_id, event), _timestamp(event), _GLOBAL)


class _DedupePerKeyFn(beam.DoFn):
    """Streaming dedupe of one event id (the key): the first copy is written, later ones are
    duplicates (or conflicts, when their content differs from the first's) until the id
    expires (``expiry_micros``, the arrival read from ``clock``), when the ``expiry`` timer
    clears the state.

    State: ``first_digest``, the ``content_digest`` of the first copy, which a later copy is
    compared with; ``expiry``, a watermark timer at the id's expiry.

    Args:
      ttl_s: how long (event time) an id is remembered after it arrived. Required, > 0.
      clock: returns "now" as a ``Timestamp`` (a picklable callable), the arrival estimate;
        None: the worker's wall clock, ``Timestamp.now``.
    """

    FIRST_DIGEST = ReadModifyWriteStateSpec("first_digest", BytesCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ttl_s: int, clock: Callable[[], Timestamp] | None = None):
        self._ttl_micros = _ttl_micros(ttl_s)
        if clock is not None and not callable(clock):
            raise ValueError("clock must be a callable returning a Timestamp")
        self._clock = _wall_clock if clock is None else clock

    def setup(self):
        self._counters = _Counters()

    def process(
        self,
        element: tuple[str, RedactedEvent],
        first_digest=beam.DoFn.StateParam(FIRST_DIGEST),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        _, event = element
        first = first_digest.read()
        content = content_digest(event)
        if first is not None:
            conflict = first != content
            self._counters.lost(conflict)
            tag = CONFLICT_TAG if conflict else DUPLICATE_TAG
            yield beam.pvalue.TaggedOutput(tag, event)  # keeps its event time
            return
        first_digest.write(content)
        at = event_micros(event.event_time)
        expiry.set(Timestamp(micros=expiry_micros(at, self._clock().micros, self._ttl_micros)))
        self._counters.unique.inc()
        yield event

    @on_timer(EXPIRY)
    def expire(self, first_digest=beam.DoFn.StateParam(FIRST_DIGEST)):
        first_digest.clear()


def _stream_batch(events: tuple[RedactedEvent, ...]) -> EventBatch:
    return EventBatch("", events)


class _DedupeOutputs(NamedTuple):
    """What ``DeduplicateEvents`` returns, whatever the strategy, read as a ``with_outputs``
    result is: ``.unique`` or ``["unique"]``, ``.duplicates`` or ``[DUPLICATE_TAG]``,
    ``.conflicts`` or ``[CONFLICT_TAG]``, ``.dead_letters`` or ``[DEAD_LETTER_TAG]``, or
    unpacked."""

    unique: beam.PCollection
    duplicates: beam.PCollection
    conflicts: beam.PCollection
    dead_letters: beam.PCollection

    def __getitem__(self, key):
        if key == DEAD_LETTER_TAG:
            return self.dead_letters
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def _winners(
    events: list[RedactedEvent], archived: Iterable[ArchivedCopy], archived_input: bool
) -> tuple[list[tuple[RedactedEvent, Candidate]], dict[str, Candidate], set[int]]:
    """The bounded rule over one group: each event with its candidate, the winning candidate
    per id (over the archived copies and the events), and the positions of the events written:
    per id, the lowest-ranked event whose input is the winner's (so one, even when an input
    was archived twice)."""
    best: dict[str, Candidate] = {}
    for copy in archived:
        candidate = (archived_rank(copy.processed_us, copy.input_id), copy.input_id, copy.content)
        kept = best.get(copy.event_id)
        if kept is None or candidate < kept:
            best[copy.event_id] = candidate
    ranked = [(event, run_candidate(event, archived_input)) for event in events]
    for event, candidate in ranked:
        kept = best.get(event.event_id)
        if kept is None or candidate < kept:
            best[event.event_id] = candidate
    written: dict[str, int] = {}
    for i, (event, candidate) in enumerate(ranked):
        if candidate[1] != best[event.event_id][1]:
            continue
        at = written.get(event.event_id)
        if at is None or candidate < ranked[at][1]:
            written[event.event_id] = i
    return ranked, best, set(written.values())


class _DedupeGroupFn(beam.DoFn):
    """Batch dedupe of one shard's group (exact over the whole input, ``transforms.winner``'s
    rule): one ``EventBatch`` of the copies written, in event-id order, and a duplicate or
    conflict output per other copy. The group is the shard's batches, or (joined with archived
    copies) a dict of its ``events`` batches and ``archived`` copy tuples."""

    def __init__(self, archived_input: bool):
        self._archived_input = archived_input

    def setup(self):
        self._counters = _Counters()

    def process(self, element: tuple[int, Iterable[EventBatch] | dict]):
        shard, grouped = element
        if isinstance(grouped, dict):
            batches, archived = grouped["events"], grouped["archived"]
        else:
            batches, archived = grouped, ()
        events = [event for batch in batches for event in batch.events]
        copies = (copy for part in archived for copy in part)
        ranked, best, written = _winners(events, copies, self._archived_input)
        kept: list[RedactedEvent] = []
        for i, (event, candidate) in enumerate(ranked):
            if i in written:
                kept.append(event)
                continue
            conflict = candidate[2] != best[event.event_id][2]
            self._counters.lost(conflict)
            yield _loser(event, conflict)
        if kept:
            kept.sort(key=lambda event: event.event_id)
            self._counters.unique.inc(len(kept))
            yield _stamped(EventBatch(f"shard-{shard}", tuple(kept)), kept)


class _ShardArchivedFn(beam.DoFn):
    """Gathers a bundle's ``ArchivedCopy`` elements per shard: ``(shard, tuple of copies)``, so
    the join with the events takes a few elements per bundle, not one per archived event."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def start_bundle(self):
        self._parts: dict[int, list[ArchivedCopy]] = {}

    def process(self, copy: ArchivedCopy):
        self._parts.setdefault(shard_of(copy.event_id, self._num_shards), []).append(copy)

    def finish_bundle(self):
        for shard, copies in self._parts.items():
            yield WindowedValue((shard, tuple(copies)), Timestamp(0), _GLOBAL)
        self._parts = {}


class _SplitByCopiesFn(beam.DoFn):
    """Batch dedupe of one batch with the winners chosen beforehand (``copies``: event id ->
    the winning ``(input_id, content)``, for ids carried by more than one line or archived
    already)."""

    def setup(self):
        self._counters = _Counters()

    def process(self, batch: EventBatch, copies: dict[str, tuple[str, bytes]]):
        if len(batch.offsets) != len(batch.events):
            raise ValueError("deduplicating with chosen copies needs the input's line offsets")
        unique: list[RedactedEvent] = []
        for event, offset in zip(batch.events, batch.offsets, strict=True):
            error = _keying_error(event)
            if error is not None:
                yield _internal_error(event, error)
                continue
            winner = copies.get(event.event_id)
            input_id = event.input_id or f"{batch.source}#{offset}"
            outcome = (
                None if winner is None else copy_outcome(input_id, content_digest(event), winner)
            )
            if outcome is None or outcome == WRITTEN:
                unique.append(event)
            else:
                conflict = outcome == DUPLICATE_CONFLICT
                self._counters.lost(conflict)
                yield _loser(event, conflict)
        if unique:
            self._counters.unique.inc(len(unique))
            yield _stamped(EventBatch(batch.source, tuple(unique)), unique)


class DeduplicateEvents(beam.PTransform):
    """Splits batches of redacted events into the copies written, duplicates and conflicting
    copies, by ``event_id``.

    Input: ``EventBatch`` elements in the global window (as ``RedactPii`` emits them), bounded
    or unbounded. Outputs: ``unique``, ``EventBatch`` elements of the copies written, each
    timestamped with its earliest event time (bounded input: one per input batch with
    ``copies``, else one per shard; unbounded input, ``sharded``: one per input batch and
    shard; ``per_key``: one per bundle of the dedupe step, source ``""``); ``DUPLICATE_TAG``,
    one ``RedactedEvent`` per other copy with the written copy's content, and
    ``CONFLICT_TAG``, one per other copy whose content differs, each timestamped with its
    event time. Each input event is in exactly one. Read them as ``.unique``,
    ``[DUPLICATE_TAG]`` and ``[CONFLICT_TAG]`` whatever the strategy; ``DEAD_LETTER_TAG``, one
    ``DeadLetter`` (``internal_error:dedupe``) per event that cannot be keyed. See the module
    docstring for the guarantee in each mode.

    Args:
      ttl_s: how long (event time, streaming) an id is remembered after its first copy
        arrived. Required, > 0; the default covers a 1-hour allowed lateness and a 1-minute
        window.
      num_shards: number of state keys of the ``sharded`` strategy and of the bounded
        grouping. More shards: more parallelism, smaller state per key.
      copies: bounded input only: a PCollection of ``(event_id, (input_id, content))``, the
        winning input and its content digest for each id that several lines (or the archive
        and a line) carry (``transforms.copies.ChooseCopies``); the input batches must then
        carry their offsets.
      strategy: the streaming strategy, one of ``DEDUPE_STRATEGIES``: ``sharded`` (local
        runners) or ``per_key`` (Dataflow). Bounded input is deduplicated the same either way.
      clock: ``per_key`` only: returns "now" as a ``Timestamp`` (a picklable callable), the
        arrival estimate of the expiry rule; None: the worker's wall clock. Tests pin it.
      archived: bounded input without ``copies`` only: a PCollection of ``ArchivedCopy``, the
        copies already in the archive of the ids the input may carry (first archived wins).
      archived_input: bounded input only: the events are themselves archived copies (a
        reconciliation reads the archive), ranked first processed, then by input identity.
    """

    def __init__(
        self,
        ttl_s: int = DEFAULT_TTL_S,
        num_shards: int = 32,
        copies=None,
        strategy: str = "sharded",
        clock: Callable[[], Timestamp] | None = None,
        archived=None,
        archived_input: bool = False,
    ):
        super().__init__()
        _ttl_micros(ttl_s)  # validated here, where the composite is built
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        if strategy not in DEDUPE_STRATEGIES:
            raise ValueError(f"strategy must be one of {DEDUPE_STRATEGIES}, got {strategy!r}")
        if clock is not None and strategy != "per_key":
            raise ValueError("clock goes with strategy='per_key'")
        if clock is not None and not callable(clock):
            raise ValueError("clock must be a callable returning a Timestamp")
        if archived is not None and copies is not None:
            raise ValueError("archived copies go to ChooseCopies when copies are chosen first")
        self._ttl_s = ttl_s
        self._num_shards = num_shards
        self._copies = copies
        self._strategy = strategy
        self._clock = clock
        self._archived = archived
        self._archived_input = archived_input

    def expand(self, batches):
        if not isinstance(batches.windowing.windowfn, window.GlobalWindows):
            raise ValueError("DeduplicateEvents needs its input in the global window")
        if not batches.is_bounded and (
            self._copies is not None or self._archived is not None or self._archived_input
        ):
            raise ValueError("copies, archived and archived_input work on bounded input only")
        if self._copies is not None:
            split = batches | "DedupeByCopies" >> beam.ParDo(
                _SplitByCopiesFn(), copies=beam.pvalue.AsDict(self._copies)
            ).with_output_types(EventBatch, **_DUPLICATES, **_DEAD_LETTERS).with_outputs(
                *_SIDE_TAGS, DEAD_LETTER_TAG, main="unique"
            )
            return _DedupeOutputs(
                split.unique, split[DUPLICATE_TAG], split[CONFLICT_TAG], split[DEAD_LETTER_TAG]
            )
        if not batches.is_bounded and self._strategy == "per_key":
            return self._expand_per_key(batches)
        split = batches | "SplitByShard" >> beam.ParDo(
            _SplitByShardFn(self._num_shards)
        ).with_output_types(tuple[int, EventBatch], **_DEAD_LETTERS).with_outputs(
            DEAD_LETTER_TAG, main="shards"
        )
        by_shard = split.shards
        if batches.is_bounded:
            if self._archived is None:
                grouped = by_shard | "GroupByShard" >> beam.GroupByKey()
            else:
                archived = self._archived | "ShardArchived" >> beam.ParDo(
                    _ShardArchivedFn(self._num_shards)
                ).with_output_types(tuple[int, tuple[ArchivedCopy, ...]])
                grouped = {
                    "events": by_shard,
                    "archived": archived,
                } | "GroupByShard" >> beam.CoGroupByKey()
            deduped = grouped | "DedupeGroups" >> beam.ParDo(
                _DedupeGroupFn(self._archived_input)
            ).with_output_types(EventBatch, **_DUPLICATES).with_outputs(*_SIDE_TAGS, main="unique")
        else:
            deduped = by_shard | "DedupeStream" >> beam.ParDo(
                _DedupeShardFn(self._ttl_s)
            ).with_output_types(EventBatch, **_DUPLICATES).with_outputs(*_SIDE_TAGS, main="unique")
        return _DedupeOutputs(
            deduped.unique, deduped[DUPLICATE_TAG], deduped[CONFLICT_TAG], split[DEAD_LETTER_TAG]
        )

    def _expand_per_key(self, batches) -> _DedupeOutputs:
        keyed = batches | "KeyByEventId" >> beam.ParDo(_KeyByEventIdFn()).with_output_types(
            tuple[str, RedactedEvent], **_DEAD_LETTERS
        ).with_outputs(DEAD_LETTER_TAG, main="keyed")
        deduped = keyed.keyed | "DedupePerKey" >> beam.ParDo(
            _DedupePerKeyFn(self._ttl_s, self._clock)
        ).with_output_types(RedactedEvent, **_DUPLICATES).with_outputs(*_SIDE_TAGS, main="unique")
        # Downstream steps (the archive writer, the aggregation) take batches.
        unique = deduped.unique | "BatchUnique" >> BatchPerBundle(_stream_batch, EventBatch)
        return _DedupeOutputs(
            unique, deduped[DUPLICATE_TAG], deduped[CONFLICT_TAG], keyed[DEAD_LETTER_TAG]
        )
