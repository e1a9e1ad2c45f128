"""Choose, before the main pass of a batch run, which copy of each event id is written.

The exact batch dedupe needs every copy of an id in one place. Bringing the copies together
with a ``GroupByKey`` means shuffling whole redacted events (kilobytes of text each), which on
the local runners is the largest single cost of a backfill: the runner's main process decodes
and re-encodes every shuffled element. A batch input can instead be read twice: this first
pass parses every line (without redacting it) and keeps, per event id, only its rank and
position, so what it shuffles is a few dozen bytes per event; the main pass then knows, for
every event, whether it is the copy to write (``DeduplicateEvents`` with ``copies``).

The copy chosen is the valid line with the lowest ``(copy_rank(event), source, offset)``: the
earliest event time, then content, then the position in the input, as in the shuffle-based
batch dedupe. Lines that fail validation, or that parsing fails on unexpectedly, are never
chosen (the main pass dead-letters them): both passes parse with the same limits, clock
included, which is why batch runs pin the clock.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.deadletter import InvalidEvent, is_element_error
from transforms.dedupe import copy_rank, shard_of
from transforms.elements import LineChunk
from transforms.parse import ParseLimits, parse_event

__all__ = ["ChooseCopies"]

# (rank, source, offset) of a line: the lowest is the copy written.
_Candidate = tuple[tuple[int, str, int, float, str], str, int]
# event id -> [number of valid lines, lowest candidate], for the ids of one shard.
_Seen = dict[str, list[Any]]


def _add(seen: _Seen, event_id: str, count: int, candidate: _Candidate) -> None:
    entry = seen.get(event_id)
    if entry is None:
        seen[event_id] = [count, candidate]
        return
    entry[0] += count
    if candidate < entry[1]:
        entry[1] = candidate


def merge_seen(merged: _Seen, other: _Seen) -> _Seen:
    """Adds ``other``'s ids into ``merged`` (counts summed, lowest candidate kept); returns it."""
    for event_id, (count, candidate) in other.items():
        _add(merged, event_id, count, candidate)
    return merged


def chosen_copies(seen: _Seen) -> list[tuple[str, tuple[str, int]]]:
    """``(event_id, (source, offset))`` of the line to write, for each id with several lines."""
    return [
        (event_id, (candidate[1], candidate[2]))
        for event_id, (count, candidate) in seen.items()
        if count > 1
    ]


class _CandidatesFn(beam.DoFn):
    """Emits, per chunk, ``(shard, seen)`` for every shard its valid lines fall in: the chunk's
    ids counted in the DoFn, so the combine takes a few elements per chunk rather than one
    per line (on the local runners every element costs its coding and bookkeeping)."""

    def __init__(self, limits: ParseLimits, replay: bool, num_shards: int):
        self._limits = limits
        self._replay = replay
        self._num_shards = num_shards

    def process(self, chunk: LineChunk):
        if len(chunk.offsets) != len(chunk.lines):
            raise ValueError("choosing copies needs the input's line offsets")
        now = self._limits.now
        shards: dict[int, _Seen] = {}
        for raw, offset in zip(chunk.lines, chunk.offsets, strict=True):
            try:
                event = parse_event(raw, now=now, limits=self._limits, pseudonymised=self._replay)
            except InvalidEvent:
                continue
            except Exception as error:
                # An unexpected error of this line: the main pass makes it a dead letter
                # (internal_error:parse), so it is never the copy written.
                if not is_element_error(error):
                    raise
                continue
            shard = shard_of(event.event_id, self._num_shards)
            seen = shards.get(shard)
            if seen is None:
                seen = shards[shard] = {}
            _add(seen, event.event_id, 1, (copy_rank(event), chunk.source, offset))
        yield from shards.items()


class _ChooseCopyFn(beam.CombineFn):
    """Per shard: merges the chunks' ``seen`` dicts; outputs the ids with more than one line
    and the position of the line to write."""

    def create_accumulator(self) -> _Seen:
        return {}

    def add_input(self, acc: _Seen, seen: _Seen) -> _Seen:
        return merge_seen(acc, seen)

    def merge_accumulators(self, accumulators) -> _Seen:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            merge_seen(merged, acc)
        return merged

    def extract_output(self, acc: _Seen) -> list[tuple[str, tuple[str, int]]]:
        return chosen_copies(acc)


class ChooseCopies(beam.PTransform):
    """Picks the line to write for every event id that more than one valid line carries.

    Input: PCollection[LineChunk], bounded, with line offsets (a read of the same input as
    the main pass, e.g. ``pipelines.io.sources.lines.ReadLineChunks``). Output: bounded
    PCollection[(event_id, (source, offset))], one per such id, for
    ``DeduplicateEvents(copies=...)``. Ids carried by one valid line only are not in it.

    Args:
      limits: the main pass's parse limits, with the clock pinned (``limits.now``): both
        passes must agree on which lines are valid.
      replay: parse as dead-letter payloads (``ParseEvents(replay=True)``).
      num_shards: keys of the combine (each holds the ids of its shard while counting).
    """

    def __init__(self, limits: ParseLimits, replay: bool = False, num_shards: int = 32):
        super().__init__()
        if limits.now is None:
            raise ValueError("ChooseCopies needs limits.now: both passes must use one clock")
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._limits = limits
        self._replay = replay
        self._num_shards = num_shards

    def expand(self, chunks):
        if not chunks.is_bounded:
            raise ValueError("ChooseCopies works on bounded input only")
        return (
            chunks
            | "Candidates"
            >> beam.ParDo(
                _CandidatesFn(self._limits, self._replay, self._num_shards)
            ).with_output_types(tuple[int, _Seen])
            | "ChoosePerShard" >> beam.CombinePerKey(_ChooseCopyFn())
            | "Chosen"
            >> beam.FlatMap(lambda kv: kv[1]).with_output_types(tuple[str, tuple[str, int]])
        )
